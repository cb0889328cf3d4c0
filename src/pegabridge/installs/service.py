"""Portals, brands, API keys and the Pega app installation of a brand.

These functions are the one place where installations change; the command line, the web
wizard and the HTTP API all call them. Each takes an open connection, so the caller
decides the transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import SplitResult, urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.events.metrics import Activity, format_activities, parse_activities
from pegabridge.installs.endpoint_guard import EndpointGuard, EndpointRefused
from pegabridge.installs.vault import Vault
from pegabridge.store.tables import api_keys, brands, installations, portals

API_KEY_PREFIX = "pb_"
INVOICE_INTERVALS = ("monthly", "quarterly", "yearly")
PO_NUMBER_MAX = 100


class InstallState(StrEnum):
    """The state of an installation; the value is what the database stores."""

    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    UNINSTALLED = "uninstalled"


class AuthKind(StrEnum):
    """How requests to the endpoint are authenticated; the value is what is stored."""

    BASIC = "basic"
    # An OAuth 2.0 client credentials grant (RFC 6749 section 4.4), bearer tokens.
    OAUTH2 = "oauth2"


class ClientAuth(StrEnum):
    """How an OAuth 2.0 client proves itself at the token endpoint (RFC 6749 2.3.1)."""

    # client_secret_basic: id and secret in an HTTP Basic Authorization header.
    BASIC = "basic"
    # client_secret_post: id and secret as fields of the form body.
    POST = "post"


class InstallError(ValueError):
    """A request about portals, brands or installations that cannot be done as asked.

    ``field`` names the input at fault, so that a form can show the message beside it.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Installation:
    """An installation as its users see it; the password and client secret themselves
    are never in here, only whether one is set."""

    id: int
    portal_id: int
    brand_id: int
    state: InstallState
    pause_reason: str
    endpoint_url: str
    username: str
    password_set: bool
    activities: frozenset[Activity]
    invoice_interval: str
    po_number: str
    extra_headers: dict[str, str]
    wizard_step: int
    config_version: int
    activated_at: float | None
    auth_kind: AuthKind = AuthKind.BASIC
    token_url: str = ""
    client_id: str = ""
    client_secret_set: bool = False
    scope: str = ""
    client_auth: ClientAuth = ClientAuth.BASIC


@dataclass(frozen=True)
class InstallSettings:
    """What the three wizard steps ask; ``None`` leaves a value as it is."""

    endpoint_url: str | None = None
    username: str | None = None
    password: str | None = None
    activities: frozenset[Activity] | None = None
    invoice_interval: str | None = None
    po_number: str | None = None
    extra_headers: dict[str, str] | None = None
    auth_kind: AuthKind | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None
    client_auth: ClientAuth | None = None


# --- Portals and brands. ---


async def create_portal(conn: AsyncConnection, portal_id: int, name: str) -> None:
    """Create a portal (a client account of the platform) with the id it has there."""
    if portal_id <= 0:
        raise InstallError("a portal id is a positive number", "id")
    if await conn.scalar(select(portals.c.id).where(portals.c.id == portal_id)):
        raise InstallError(f"portal {portal_id} exists already", "id")
    await conn.execute(
        portals.insert().values(id=portal_id, name=name.strip(), created_at=time.time())
    )


async def create_brand(
    conn: AsyncConnection, portal_id: int, brand_id: int, name: str
) -> None:
    """Create a brand of a portal."""
    await require_portal(conn, portal_id)
    exists = await conn.scalar(
        select(brands.c.id).where(
            brands.c.portal_id == portal_id, brands.c.id == brand_id
        )
    )
    if exists is not None:
        raise InstallError(
            f"brand {brand_id} of portal {portal_id} exists already", "id"
        )
    await conn.execute(
        brands.insert().values(
            portal_id=portal_id, id=brand_id, name=name.strip(), created_at=time.time()
        )
    )


async def require_portal(conn: AsyncConnection, portal_id: int) -> str:
    """The portal's name; refuses an unknown portal."""
    name = await conn.scalar(select(portals.c.name).where(portals.c.id == portal_id))
    if name is None:
        raise InstallError(f"there is no portal {portal_id}", "portal")
    return str(name)


async def require_brand(conn: AsyncConnection, portal_id: int, brand_id: int) -> str:
    """The brand's name; refuses a brand that is not in the portal."""
    name = await conn.scalar(
        select(brands.c.name).where(
            brands.c.portal_id == portal_id, brands.c.id == brand_id
        )
    )
    if name is None:
        raise InstallError(f"portal {portal_id} has no brand {brand_id}", "brand")
    return str(name)


async def list_brands(conn: AsyncConnection, portal_id: int) -> list[tuple[int, str]]:
    """The brands of a portal as (id, name), by id."""
    rows = await conn.execute(
        select(brands.c.id, brands.c.name)
        .where(brands.c.portal_id == portal_id)
        .order_by(brands.c.id)
    )
    return [(r.id, r.name) for r in rows]


# --- API keys. ---


def hash_api_key(key: str) -> str:
    """The stored form of an API key (keys are random, so a plain SHA-256 suffices)."""
    return hashlib.sha256(key.encode()).hexdigest()


async def create_api_key(conn: AsyncConnection, portal_id: int, label: str = "") -> str:
    """Make a new API key for a portal; the key is returned once and stored hashed."""
    await require_portal(conn, portal_id)
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    await conn.execute(
        api_keys.insert().values(
            portal_id=portal_id,
            key_hash=hash_api_key(key),
            prefix=key[:10],
            label=label,
            created_at=time.time(),
        )
    )
    return key


async def portal_of_api_key(conn: AsyncConnection, key: str) -> int | None:
    """The portal an API key belongs to, or ``None`` for an unknown or revoked key."""
    portal_id = await conn.scalar(
        select(api_keys.c.portal_id).where(
            api_keys.c.key_hash == hash_api_key(key), api_keys.c.revoked_at.is_(None)
        )
    )
    return None if portal_id is None else int(portal_id)


# --- Installations. ---


def check_endpoint_url(url: str, field: str = "endpoint_url") -> str:
    """A cleaned endpoint URL, or :class:`InstallError` saying what is wrong with it.

    Only ``https://`` is accepted, except for an endpoint on this machine (loopback),
    which may use plain ``http://`` for trials. The token URL of an OAuth 2.0 client
    follows the same rules; ``field`` names which of the two is checked.
    """
    what, example = _URL_FIELDS[field]
    url = url.strip()
    if not url:
        raise InstallError(f"enter the URL of the {what}", field)
    if any(ch.isspace() for ch in url):
        raise InstallError("a URL cannot contain spaces", field)
    parts = _split_url(url, field)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InstallError(f"the {what} must be a full URL such as {example}", field)
    if parts.username is not None or parts.password is not None:
        # The HTTP client refuses to send a URL's credentials beside the Authorization
        # header, and a password in the URL would be stored and shown unencrypted.
        raise InstallError(
            "put the username and password in their own fields, not in the URL",
            field,
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise InstallError(
            f"the {what} must use https:// (plain http only on this machine)", field
        )
    return url


async def check_endpoint(
    guard: EndpointGuard, url: str, field: str = "endpoint_url"
) -> str:
    """The cleaned URL, refused when it is malformed or points where it may not.

    The token URL of an OAuth 2.0 client (``field`` ``token_url``) obeys the same rules.
    """
    url = check_endpoint_url(url, field)
    try:
        await guard.check_url(url)
    except EndpointRefused as exc:
        raise InstallError(str(exc), field) from None
    except OSError:
        raise InstallError(
            "this name does not resolve to an address; check the spelling", field
        ) from None
    return url


def _split_url(url: str, field: str) -> SplitResult:
    """``url`` in parts; a broken host or port is an :class:`InstallError`."""
    what, example = _URL_FIELDS[field]
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading the port checks that it is a number in range
    except ValueError as exc:
        raise InstallError(
            f"the {what} is not valid ({exc}); write it as {example}", field
        ) from None
    return parts


# What each URL field is called in messages, and an example of a good value.
_URL_FIELDS = {
    "endpoint_url": ("Pega REST endpoint", "https://pega.example.com/api/ih"),
    "token_url": (
        "token endpoint",
        "https://pega.example.com/prweb/PRRestService/oauth2/v1/token",
    ),
}

# RFC 6749 section 3.3: scope tokens of printable ASCII without '"' and '\\'.
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$")
SCOPE_MAX = 1000


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` names this machine."""
    import ipaddress

    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_settings(values: InstallSettings) -> None:
    if values.invoice_interval is not None and values.invoice_interval not in (
        INVOICE_INTERVALS
    ):
        raise InstallError(
            f"the invoice interval is one of {', '.join(INVOICE_INTERVALS)}",
            "invoice_interval",
        )
    if values.po_number is not None and len(values.po_number) > PO_NUMBER_MAX:
        raise InstallError(
            f"a PO number has at most {PO_NUMBER_MAX} characters", "po_number"
        )
    if values.username is not None and len(values.username) > 400:
        raise InstallError("the username is too long", "username")
    _check_oauth_settings(values)


def _check_oauth_settings(values: InstallSettings) -> None:
    if values.client_id is not None and len(values.client_id) > 400:
        raise InstallError("the client id is too long", "client_id")
    if values.client_secret is not None and len(values.client_secret) > 1000:
        raise InstallError("the client secret is too long", "client_secret")
    if values.scope is not None:
        check_scope(values.scope)


def check_scope(scope: str) -> str:
    """A cleaned scope: words separated by single spaces, or empty for none."""
    scope = " ".join(scope.split())
    if len(scope) > SCOPE_MAX:
        raise InstallError(f"a scope has at most {SCOPE_MAX} characters", "scope")
    if scope and not _SCOPE.match(scope):
        raise InstallError(
            "a scope is words separated by spaces, without quotes, backslashes or "
            "other special characters",
            "scope",
        )
    return scope


async def find_installation(
    conn: AsyncConnection, portal_id: int, brand_id: int
) -> Installation | None:
    """The brand's live (not uninstalled) Pega app installation, if any."""
    row = (
        await conn.execute(
            select(installations).where(
                installations.c.portal_id == portal_id,
                installations.c.brand_id == brand_id,
                installations.c.state != InstallState.UNINSTALLED.value,
            )
        )
    ).first()
    return None if row is None else _installation(row)


async def get_installation(conn: AsyncConnection, installation_id: int) -> Installation:
    """An installation by id."""
    row = (
        await conn.execute(
            select(installations).where(installations.c.id == installation_id)
        )
    ).first()
    if row is None:
        raise InstallError(f"there is no installation {installation_id}")
    return _installation(row)


async def list_installations(
    conn: AsyncConnection, portal_id: int | None = None
) -> list[Installation]:
    """Live installations, of one portal or of all."""
    query = select(installations).where(
        installations.c.state != InstallState.UNINSTALLED.value
    )
    if portal_id is not None:
        query = query.where(installations.c.portal_id == portal_id)
    rows = await conn.execute(query.order_by(installations.c.id))
    return [_installation(r) for r in rows]


def _installation(row: object) -> Installation:
    r = row._mapping  # type: ignore[attr-defined]
    return Installation(
        id=r["id"],
        portal_id=r["portal_id"],
        brand_id=r["brand_id"],
        state=InstallState(r["state"]),
        pause_reason=r["pause_reason"],
        endpoint_url=r["endpoint_url"],
        username=r["username"],
        password_set=bool(r["password_enc"]),
        activities=parse_activities(r["activities"]),
        invoice_interval=r["invoice_interval"],
        po_number=r["po_number"],
        extra_headers=json.loads(r["extra_headers"] or "{}"),
        wizard_step=r["wizard_step"],
        config_version=r["config_version"],
        activated_at=r["activated_at"],
        auth_kind=AuthKind(r["auth_kind"]),
        token_url=r["oauth_token_url"],
        client_id=r["oauth_client_id"],
        client_secret_set=bool(r["oauth_secret_enc"]),
        scope=r["oauth_scope"],
        client_auth=ClientAuth(r["oauth_client_auth"]),
    )


async def save_installation(
    conn: AsyncConnection,
    vault: Vault,
    portal_id: int,
    brand_id: int,
    values: InstallSettings,
    activate: bool = False,
) -> Installation:
    """Create or update the brand's installation with the values given.

    With ``activate`` the installation starts sending (the end of the wizard): it must
    then have an endpoint and its credentials (a password, or the token URL, client id
    and secret of an OAuth 2.0 client). Saving a new password or client secret for an
    installation that was paused because its credentials were refused resumes it.
    """
    await require_brand(conn, portal_id, brand_id)
    _check_settings(values)
    changes = _changes(vault, values)
    current = await find_installation(conn, portal_id, brand_id)
    now = time.time()

    if current is None:
        new_id = await _insert_installation(conn, portal_id, brand_id, now)
        current = await get_installation(conn, new_id)

    state = current.state
    if activate or state in (InstallState.ACTIVE, InstallState.PAUSED):
        # A sending installation must stay able to send after the change too.
        _require_complete(current, values)
    if activate:
        state = InstallState.ACTIVE if state is not InstallState.PAUSED else state
    new_secret = values.password is not None or values.client_secret is not None
    if new_secret and state is InstallState.PAUSED:
        state = InstallState.ACTIVE
    changes["state"] = state.value
    if state is InstallState.ACTIVE:
        changes["pause_reason"] = ""
        changes["paused_at"] = None
    if activate and current.activated_at is None:
        changes["activated_at"] = now

    await conn.execute(
        update(installations)
        .where(installations.c.id == current.id)
        .values(
            **changes,
            updated_at=now,
            config_version=installations.c.config_version + 1,
        )
    )
    return await get_installation(conn, current.id)


def _changes(vault: Vault, values: InstallSettings) -> dict[str, object]:
    changes: dict[str, object] = {}
    if values.endpoint_url is not None:
        changes["endpoint_url"] = check_endpoint_url(values.endpoint_url)
    if values.username is not None:
        changes["username"] = values.username
    if values.password is not None:
        changes["password_enc"] = vault.encrypt(values.password)
    if values.activities is not None:
        if not values.activities:
            # An installation that sends nothing skips every event without a word.
            raise InstallError("choose at least one activity to send", "activities")
        changes["activities"] = format_activities(values.activities)
    if values.invoice_interval is not None:
        changes["invoice_interval"] = values.invoice_interval
    if values.po_number is not None:
        changes["po_number"] = values.po_number.strip()
    if values.extra_headers is not None:
        changes["extra_headers"] = json.dumps(values.extra_headers)
    changes.update(_oauth_changes(vault, values))
    return changes


def _oauth_changes(vault: Vault, values: InstallSettings) -> dict[str, object]:
    changes: dict[str, object] = {}
    if values.auth_kind is not None:
        changes["auth_kind"] = AuthKind(values.auth_kind).value
    if values.token_url is not None:
        # Empty is allowed while the installation uses Basic authentication.
        url = values.token_url.strip()
        changes["oauth_token_url"] = url and check_endpoint_url(url, "token_url")
    if values.client_id is not None:
        changes["oauth_client_id"] = values.client_id.strip()
    if values.client_secret is not None:
        changes["oauth_secret_enc"] = vault.encrypt(values.client_secret)
    if values.scope is not None:
        changes["oauth_scope"] = check_scope(values.scope)
    if values.client_auth is not None:
        changes["oauth_client_auth"] = ClientAuth(values.client_auth).value
    return changes


def _require_complete(current: Installation, values: InstallSettings) -> None:
    endpoint = (
        values.endpoint_url
        if values.endpoint_url is not None
        else (current.endpoint_url)
    )
    if not endpoint:
        raise InstallError("step 1 needs the endpoint URL", "endpoint_url")
    kind = values.auth_kind or current.auth_kind
    if kind is AuthKind.OAUTH2:
        _require_oauth_client(current, values)
    elif not (values.password or current.password_set):
        raise InstallError("step 1 needs the password", "password")


def _require_oauth_client(current: Installation, values: InstallSettings) -> None:
    token_url = values.token_url if values.token_url is not None else current.token_url
    client_id = values.client_id if values.client_id is not None else current.client_id
    if not token_url.strip():
        raise InstallError("OAuth 2.0 needs the token URL", "token_url")
    if not client_id.strip():
        raise InstallError("OAuth 2.0 needs the client id", "client_id")
    if not (values.client_secret or current.client_secret_set):
        raise InstallError("OAuth 2.0 needs the client secret", "client_secret")


async def _insert_installation(
    conn: AsyncConnection, portal_id: int, brand_id: int, now: float
) -> int:
    result = await conn.execute(
        installations.insert().values(
            portal_id=portal_id,
            brand_id=brand_id,
            state=InstallState.DRAFT.value,
            activities=format_activities(set(Activity)),
            created_at=now,
            updated_at=now,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def pause(conn: AsyncConnection, installation_id: int, reason: str) -> bool:
    """Stop sending for an installation; its events wait. False if it was not active."""
    result = await conn.execute(
        update(installations)
        .where(
            installations.c.id == installation_id,
            installations.c.state == InstallState.ACTIVE.value,
        )
        .values(
            state=InstallState.PAUSED.value,
            pause_reason=reason,
            paused_at=time.time(),
            updated_at=time.time(),
            config_version=installations.c.config_version + 1,
        )
    )
    return bool(result.rowcount)


async def resume(conn: AsyncConnection, installation_id: int) -> bool:
    """Send again for a paused installation. False if it was not paused."""
    result = await conn.execute(
        update(installations)
        .where(
            installations.c.id == installation_id,
            installations.c.state == InstallState.PAUSED.value,
        )
        .values(
            state=InstallState.ACTIVE.value,
            pause_reason="",
            paused_at=None,
            updated_at=time.time(),
            config_version=installations.c.config_version + 1,
        )
    )
    return bool(result.rowcount)


async def uninstall(conn: AsyncConnection, installation_id: int) -> None:
    """Remove the app from the brand; waiting events are kept as dead letters."""
    from pegabridge.store.tables import outbox

    now = time.time()
    await conn.execute(
        update(installations)
        .where(installations.c.id == installation_id)
        .values(
            state=InstallState.UNINSTALLED.value,
            uninstalled_at=now,
            updated_at=now,
            password_enc="",
            oauth_secret_enc="",
            config_version=installations.c.config_version + 1,
        )
    )
    await conn.execute(
        update(outbox)
        .where(outbox.c.installation_id == installation_id, outbox.c.state == "pending")
        .values(
            state="dead", last_error="uninstalled", leased_by=None, lease_until=None
        )
    )


async def credentials(
    conn: AsyncConnection, vault: Vault, installation_id: int
) -> tuple[str, str]:
    """The username and the decrypted password, for the delivery client only."""
    row = (
        await conn.execute(
            select(installations.c.username, installations.c.password_enc).where(
                installations.c.id == installation_id
            )
        )
    ).one()
    return row.username, vault.decrypt(row.password_enc)


@dataclass(frozen=True)
class OAuthClient:
    """The OAuth 2.0 client of an installation, secret included: delivery only."""

    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    scope: str = ""
    client_auth: ClientAuth = ClientAuth.BASIC


async def oauth_client(
    conn: AsyncConnection, vault: Vault, installation_id: int
) -> OAuthClient | None:
    """The installation's OAuth 2.0 client with its decrypted secret, or ``None``
    when the installation uses Basic authentication."""
    row = (
        await conn.execute(
            select(installations).where(installations.c.id == installation_id)
        )
    ).one()
    if row.auth_kind != AuthKind.OAUTH2.value:
        return None
    return OAuthClient(
        token_url=row.oauth_token_url,
        client_id=row.oauth_client_id,
        client_secret=vault.decrypt(row.oauth_secret_enc),
        scope=row.oauth_scope,
        client_auth=ClientAuth(row.oauth_client_auth),
    )


async def client_secret(
    conn: AsyncConnection, vault: Vault, installation_id: int
) -> str:
    """The saved OAuth 2.0 client secret, decrypted (for the connection test)."""
    stored = await conn.scalar(
        select(installations.c.oauth_secret_enc).where(
            installations.c.id == installation_id
        )
    )
    return vault.decrypt(stored or "")


async def count_installations(conn: AsyncConnection) -> int:
    """How many live installations there are."""
    return int(
        await conn.scalar(
            select(func.count()).where(
                installations.c.state != InstallState.UNINSTALLED.value
            )
        )
        or 0
    )
