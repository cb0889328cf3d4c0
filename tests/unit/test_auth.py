"""Accounts, passwords, sessions and tokens of the web pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.config import Settings
from pegabridge.store.db import create_engine
from pegabridge.store.migrate import upgrade
from pegabridge.web import auth

PASSWORD = "ten or more characters"


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[AsyncConnection]:
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    engine = create_engine(settings)
    await upgrade(engine)
    async with engine.begin() as connection:
        yield connection
    await engine.dispose()


SETTINGS = Settings(signin_max_failures=3, signin_lockout_s=600)


def test_passwords_are_stored_as_argon2id_hashes() -> None:
    stored = auth.hash_password(PASSWORD)

    assert stored.startswith("$argon2id$") and PASSWORD not in stored


def test_a_short_password_is_refused_with_the_field() -> None:
    with pytest.raises(auth.AuthError) as caught:
        auth.check_password_rules("short")

    assert caught.value.field == "password"


def test_an_email_is_cleaned_or_refused() -> None:
    assert auth.clean_email("  Ana@Example.COM ") == "ana@example.com"
    with pytest.raises(auth.AuthError):
        auth.clean_email("not an email")


async def test_the_right_password_signs_in(conn: AsyncConnection) -> None:
    await auth.create_user(conn, "ana@example.com", PASSWORD, 1, False)

    result = await auth.authenticate(conn, "ANA@example.com", PASSWORD, SETTINGS)

    assert result.user is not None and result.user.portal_id == 1


async def test_an_unknown_email_and_a_wrong_password_get_the_same_answer(
    conn: AsyncConnection,
) -> None:
    await auth.create_user(conn, "ana@example.com", PASSWORD, 1, False)

    unknown = await auth.authenticate(conn, "bo@example.com", PASSWORD, SETTINGS)
    wrong = await auth.authenticate(conn, "ana@example.com", "nope", SETTINGS)

    assert unknown.user is None and unknown.message == wrong.message


async def test_repeated_wrong_passwords_lock_the_account(
    conn: AsyncConnection,
) -> None:
    await auth.create_user(conn, "ana@example.com", PASSWORD, 1, False)
    for _ in range(SETTINGS.signin_max_failures):
        await auth.authenticate(conn, "ana@example.com", "nope", SETTINGS)

    result = await auth.authenticate(conn, "ana@example.com", PASSWORD, SETTINGS)

    assert result.user is None and "locked" in result.message


async def test_a_session_token_finds_its_account_until_it_ends(
    conn: AsyncConnection,
) -> None:
    user = await auth.create_user(conn, "ana@example.com", PASSWORD, None, True)
    token = await auth.create_session(conn, user.id, 60)

    session = await auth.load_session(conn, token)
    assert session is not None and session.user.is_operator
    await auth.end_session(conn, session.token_hash)

    assert await auth.load_session(conn, token) is None


async def test_a_setup_token_creates_one_administrator_only(
    conn: AsyncConnection,
) -> None:
    token = await auth.create_setup_token(conn, 60)
    await auth.create_first_admin(conn, token, "ana@example.com", PASSWORD)

    with pytest.raises(auth.AuthError):
        await auth.create_first_admin(conn, token, "eve@example.com", PASSWORD)


def test_a_tampered_cookie_is_refused() -> None:
    signer = auth.CookieSigner(b"k" * 32)
    signed = signer.sign("token")

    assert signer.unsign(signed) == "token"
    assert signer.unsign(signed[:-1] + ("A" if signed[-1] != "A" else "B")) is None


def test_an_operator_sees_every_portal_and_a_portal_user_only_theirs() -> None:
    operator = auth.User(1, "op@example.com", None, True)
    member = auth.User(2, "bo@example.com", 7, True)

    assert operator.may_see(8)
    assert member.may_see(7) and not member.may_see(8)
