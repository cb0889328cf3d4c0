"""Running the Alembic migrations from inside the service and the command line."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any constant works; it only has to be the same in every pegabridge process.
_PG_LOCK_KEY = 0x7065676162


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration pointing at pegabridge's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database schema to the newest revision.

    On PostgreSQL an advisory lock makes concurrent starts of several processes take
    turns instead of racing each other through the same migration.
    """
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY}
            )
        await conn.run_sync(_upgrade_sync)


def _upgrade_sync(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
