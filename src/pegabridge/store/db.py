"""Opening the database: the async engine, SQLite's pragmas, and the dialect in use."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from pegabridge.config import Settings

log = logging.getLogger(__name__)


def create_engine(settings: Settings) -> AsyncEngine:
    """An async engine for the configured database.

    SQLite runs in WAL mode, so that readers never wait for the writer, with the
    synchronous level of the settings (``FULL`` by default: a committed event survives a
    power cut, not only a killed process).
    """
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        return _sqlite_engine(url, settings)

    return _server_engine(url, settings)


def _server_engine(url: str, settings: Settings) -> AsyncEngine:
    """A pooled engine for PostgreSQL with the configured sizes and time limits.

    Connections are checked before use (``pool_pre_ping``), so that after a database
    restart a stale connection is replaced instead of failing the caller; a statement
    that runs past the timeout is cancelled by the server.
    """
    connect_args: dict[str, Any] = {}
    if url.startswith("postgresql+asyncpg"):
        timeout_ms = int(settings.db_statement_timeout_s * 1000)
        connect_args = {
            "timeout": settings.db_connect_timeout_s,
            "server_settings": {"statement_timeout": str(timeout_ms)},
        }
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
        connect_args=connect_args,
    )


def _sqlite_engine(url: str, settings: Settings) -> AsyncEngine:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        from pathlib import Path

        Path(path).parent.mkdir(parents=True, exist_ok=True)

    engine = create_async_engine(url, connect_args={"timeout": 30})
    synchronous = settings.sqlite_synchronous.upper()

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: DBAPIConnection, _entry: ConnectionPoolEntry) -> None:
        cursor: Any = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def is_sqlite(engine: AsyncEngine) -> bool:
    """Whether the engine talks to SQLite (which has no row locks to skip)."""
    return engine.dialect.name == "sqlite"
