"""The OAuth 2.0 client migration, run up and down on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from alembic import command
from sqlalchemy import Connection, inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from pegabridge.config import Settings
from pegabridge.installs import service
from pegabridge.installs.service import AuthKind, ClientAuth
from pegabridge.store.db import create_engine
from pegabridge.store.migrate import alembic_config
from pegabridge.store.tables import brands, installations, portals

BEFORE_OAUTH = "0004_feedback"


@pytest.fixture
async def engine(empty_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings(database_url=empty_database_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def migrate(engine: AsyncEngine, action: str, revision: str) -> None:
    def run(connection: Connection) -> None:
        getattr(command, action)(alembic_config(connection), revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def installation_columns(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(
            lambda sync: inspect(sync).get_columns("installations")
        )
    return {column["name"] for column in found}


async def an_installation_before_oauth(engine: AsyncEngine) -> int:
    """A Basic installation written with the columns of the schema before 0005."""
    now = time.time()
    async with engine.begin() as conn:
        await conn.execute(portals.insert().values(id=1, name="P", created_at=now))
        await conn.execute(
            brands.insert().values(portal_id=1, id=1, name="B", created_at=now)
        )
        result = await conn.execute(
            installations.insert().values(
                portal_id=1,
                brand_id=1,
                state="active",
                endpoint_url="https://pega.example.com/api",
                username="pega",
                created_at=now,
                updated_at=now,
            )
        )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


async def test_an_installation_from_before_keeps_basic_auth_after_the_upgrade(
    engine: AsyncEngine,
) -> None:
    await migrate(engine, "upgrade", BEFORE_OAUTH)
    installation_id = await an_installation_before_oauth(engine)

    await migrate(engine, "upgrade", "head")
    async with engine.connect() as conn:
        found = await service.get_installation(conn, installation_id)

    assert (found.auth_kind, found.scope, found.client_auth) == (
        AuthKind.BASIC,
        "",
        ClientAuth.BASIC,
    )


async def test_the_downgrade_removes_exactly_the_columns_it_added(
    engine: AsyncEngine,
) -> None:
    await migrate(engine, "upgrade", BEFORE_OAUTH)
    before = await installation_columns(engine)
    await migrate(engine, "upgrade", "head")
    upgraded = await installation_columns(engine)

    await migrate(engine, "downgrade", BEFORE_OAUTH)

    assert upgraded - before == {"oauth_scope", "oauth_client_auth"}
    assert await installation_columns(engine) == before
