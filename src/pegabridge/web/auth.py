"""People who use the pages: accounts, passwords, sessions, CSRF and the first start.

Passwords are hashed with argon2id. A signed-in browser holds a cookie with a random
session token, signed with a key derived from the master key; the database keeps only
the token's SHA-256, so a copy of the database cannot be used to sign in. Each session
has its own CSRF token, which every form sends back in a hidden field. Forms shown
before sign-in use a second cookie whose HMAC is the form's token (double submit).

An account is locked for a while after repeated wrong passwords. Until the first
account exists, each start of the service prints a one-time setup link.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, Signer
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.config import Settings
from pegabridge.store.tables import setup_tokens, users, web_sessions

log = logging.getLogger(__name__)

SESSION_COOKIE = "pb_session"
PRESESSION_COOKIE = "pb_pre"
PASSWORD_MIN = 10
PASSWORD_MAX = 1024
EMAIL_MAX = 320

_hasher = PasswordHasher()
# Verified against when the email is unknown, so that both cases take as long.
_DUMMY_HASH = _hasher.hash("pegabridge-no-such-user")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class AuthError(ValueError):
    """Input about an account that cannot be accepted; ``field`` names the input."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class User:
    """A person signed in to the pages.

    An administrator without a portal runs the platform and sees every portal; any
    other account sees only its own portal's brands.
    """

    id: int
    email: str
    portal_id: int | None
    is_admin: bool

    @property
    def is_operator(self) -> bool:
        """Whether this account sees and manages every portal."""
        return self.is_admin and self.portal_id is None

    def may_see(self, portal_id: int) -> bool:
        """Whether this account may see and change the portal's brands."""
        return self.is_operator or self.portal_id == portal_id


@dataclass(frozen=True)
class Session:
    """A signed-in browser: who, and the token its forms must send back."""

    user: User
    csrf_token: str
    token_hash: str


@dataclass(frozen=True)
class SignIn:
    """The result of a sign-in attempt: the account, or the message to show."""

    user: User | None
    message: str = ""


# --- Passwords and accounts. ---


def hash_password(password: str) -> str:
    """The argon2id hash of ``password``, as stored."""
    return _hasher.hash(password)


def check_password_rules(password: str) -> None:
    """Refuse a password that is too short or too long to be accepted."""
    if len(password) < PASSWORD_MIN:
        raise AuthError(
            f"choose a password of at least {PASSWORD_MIN} characters", "password"
        )
    if len(password) > PASSWORD_MAX:
        raise AuthError(f"a password has at most {PASSWORD_MAX} characters", "password")


def clean_email(email: str) -> str:
    """The email address in its stored form (trimmed, lower case), or refused."""
    email = email.strip().lower()
    if len(email) > EMAIL_MAX or not _EMAIL.match(email):
        raise AuthError("enter an email address such as ana@example.com", "email")
    return email


async def count_users(conn: AsyncConnection) -> int:
    """How many accounts exist."""
    return int(await conn.scalar(select(func.count()).select_from(users)) or 0)


async def create_user(
    conn: AsyncConnection,
    email: str,
    password: str,
    portal_id: int | None,
    is_admin: bool,
) -> User:
    """Create an account; refuses a taken email or a weak password."""
    email = clean_email(email)
    check_password_rules(password)
    taken = await conn.scalar(select(users.c.id).where(users.c.email == email))
    if taken is not None:
        raise AuthError(f"there is already an account for {email}", "email")

    result = await conn.execute(
        users.insert().values(
            portal_id=portal_id,
            email=email,
            password_hash=hash_password(password),
            is_admin=is_admin,
            failed_logins=0,
            created_at=time.time(),
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return User(int(key[0]), email, portal_id, is_admin)


async def list_users(conn: AsyncConnection, portal_id: int | None) -> list[User]:
    """The accounts of a portal, or all accounts when ``portal_id`` is ``None``."""
    query = select(users).order_by(users.c.email)
    if portal_id is not None:
        query = query.where(users.c.portal_id == portal_id)
    return [_user(r) for r in await conn.execute(query)]


def _user(row: object) -> User:
    r = row._mapping  # type: ignore[attr-defined]
    portal_id = r["portal_id"]
    return User(
        int(r["id"]),
        r["email"],
        None if portal_id is None else int(portal_id),
        bool(r["is_admin"]),
    )


async def authenticate(
    conn: AsyncConnection, email: str, password: str, settings: Settings
) -> SignIn:
    """Check an email and password, counting failures and locking the account.

    The answer never tells whether the email exists. After
    ``settings.signin_max_failures`` wrong passwords in a row the account is locked
    for ``settings.signin_lockout_s``, even for the right password.
    """
    wrong = SignIn(None, "The email or the password is not right.")
    row = (
        await conn.execute(
            select(users).where(users.c.email == email.strip().lower()[:EMAIL_MAX])
        )
    ).first()
    if row is None:
        _verify(_DUMMY_HASH, password)
        return wrong

    now = time.time()
    locked_until = row.locked_until or 0.0
    if locked_until > now:
        minutes = max(1, round((locked_until - now) / 60))
        return SignIn(
            None,
            f"Too many wrong passwords: this account is locked for about {minutes} "
            "more minute(s).",
        )

    if not _verify(row.password_hash, password):
        await _count_failure(conn, row.id, row.failed_logins + 1, settings, now)
        return wrong

    await conn.execute(
        update(users)
        .where(users.c.id == row.id)
        .values(failed_logins=0, locked_until=None)
    )
    if _hasher.check_needs_rehash(row.password_hash):
        await conn.execute(
            update(users)
            .where(users.c.id == row.id)
            .values(password_hash=hash_password(password))
        )
    return SignIn(_user(row))


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def _count_failure(
    conn: AsyncConnection, user_id: int, failures: int, settings: Settings, now: float
) -> None:
    locked = failures >= settings.signin_max_failures
    await conn.execute(
        update(users)
        .where(users.c.id == user_id)
        .values(
            failed_logins=0 if locked else failures,
            locked_until=now + settings.signin_lockout_s if locked else None,
        )
    )
    if locked:
        log.warning(
            "account locked after wrong passwords",
            extra={"event": "auth.locked", "user_id": user_id, "failures": failures},
        )


# --- Sessions. ---


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_session(conn: AsyncConnection, user_id: int, max_age_s: float) -> str:
    """Open a session for an account; returns the token for the cookie."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    await conn.execute(
        web_sessions.insert().values(
            token_hash=_digest(token),
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            expires_at=now + max_age_s,
        )
    )
    await conn.execute(delete(web_sessions).where(web_sessions.c.expires_at < now))
    return token


async def load_session(conn: AsyncConnection, token: str) -> Session | None:
    """The live session of a token, or ``None``."""
    row = (
        await conn.execute(
            select(web_sessions, users)
            .join(users, users.c.id == web_sessions.c.user_id)
            .where(
                web_sessions.c.token_hash == _digest(token),
                web_sessions.c.expires_at > time.time(),
            )
        )
    ).first()
    if row is None:
        return None
    user = User(int(row.user_id), row.email, row.portal_id, bool(row.is_admin))
    return Session(user, row.csrf_token, row.token_hash)


async def end_session(conn: AsyncConnection, token_hash: str) -> None:
    """Sign out: the session's cookie no longer works."""
    await conn.execute(
        delete(web_sessions).where(web_sessions.c.token_hash == token_hash)
    )


class CookieSigner:
    """Signs cookie values and makes the CSRF tokens of pre-session forms."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._signer = Signer(key, salt="pegabridge.session")

    def sign(self, value: str) -> str:
        return self._signer.sign(value).decode("ascii")

    def unsign(self, signed: str) -> str | None:
        try:
            return self._signer.unsign(signed).decode("utf-8")
        except (BadSignature, UnicodeDecodeError, ValueError):
            return None

    def presession_token(self, nonce: str) -> str:
        """The form token that goes with a pre-session cookie's nonce."""
        return hmac.new(self._key, b"csrf:" + nonce.encode(), "sha256").hexdigest()


def tokens_match(expected: str, given: str) -> bool:
    """Compare two tokens in constant time; an empty token never matches."""
    return bool(expected) and hmac.compare_digest(
        expected.encode(), given.encode("utf-8", "replace")
    )


# --- The first start. ---


async def create_setup_token(conn: AsyncConnection, ttl_s: float) -> str:
    """A fresh one-time token for creating the first administrator."""
    token = secrets.token_urlsafe(24)
    now = time.time()
    await conn.execute(
        setup_tokens.insert().values(
            token_hash=_digest(token), created_at=now, expires_at=now + ttl_s
        )
    )
    return token


async def setup_token_valid(conn: AsyncConnection, token: str) -> bool:
    """Whether ``token`` may still create the first administrator."""
    if await count_users(conn) > 0:
        return False
    found = await conn.scalar(
        select(setup_tokens.c.token_hash).where(
            setup_tokens.c.token_hash == _digest(token),
            setup_tokens.c.used_at.is_(None),
            setup_tokens.c.expires_at > time.time(),
        )
    )
    return found is not None


async def create_first_admin(
    conn: AsyncConnection, token: str, email: str, password: str
) -> User:
    """Use the setup token once: create the platform's first administrator."""
    if not await setup_token_valid(conn, token):
        raise AuthError(
            "this setup link is used up or expired; restart pegabridge for a new one"
        )
    user = await create_user(conn, email, password, portal_id=None, is_admin=True)
    await conn.execute(
        update(setup_tokens)
        .where(setup_tokens.c.used_at.is_(None))
        .values(used_at=time.time())
    )
    return user


def setup_url(settings: Settings, token: str) -> str:
    """The link printed on the console."""
    return f"{settings.public_base_url.rstrip('/')}/setup/{token}"
