"""The link to SQLite: one trip to the database thread per statement.

SQLite runs in a thread of its own (aiosqlite), and every call into it is a round trip
through the event loop. SQLAlchemy asks for four per statement (open a cursor, execute,
fetch the rows, close the cursor); under load each trip waits for a turn of a busy
loop, so a transaction of ten statements took tens of milliseconds while SQLite itself
needed well under one. Here a statement is executed, its rows fetched and its cursor
closed in one trip, and the cursor answers the rest from what that trip brought back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect
from sqlalchemy.engine import make_url


class _Done:
    """What one trip brought back from a statement."""

    def __init__(self, cursor: sqlite3.Cursor, fetch: bool) -> None:
        self.description = cursor.description
        self.rows: list[Any] = cursor.fetchall() if fetch and cursor.description else []
        self.rowcount = cursor.rowcount
        self.lastrowid = cursor.lastrowid


def _statement(
    conn: sqlite3.Connection, sql: str, parameters: Any, many: bool
) -> _Done:
    """Run one statement (once, or once per parameter set) and close its cursor."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        else:
            cursor.execute(sql, parameters)
        return _Done(cursor, fetch=not many)
    finally:
        cursor.close()


class OneTripCursor:
    """A cursor whose ``execute`` does all the work in one trip to the thread.

    It offers what SQLAlchemy's aiosqlite adapter uses: ``execute``,
    ``executemany``, the fetch methods, ``close`` and the result attributes.
    """

    def __init__(self, connection: OneTripConnection) -> None:
        self._connection = connection
        self._rows: list[Any] = []
        self._position = 0
        self.description: Any = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.arraysize = 1

    async def __aenter__(self) -> OneTripCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _take(self, done: _Done) -> OneTripCursor:
        self._rows, self._position = done.rows, 0
        self.description = done.description
        self.rowcount = done.rowcount
        self.lastrowid = done.lastrowid
        return self

    async def execute(self, sql: str, parameters: Any = None) -> OneTripCursor:
        done = await self._connection.run(_statement, sql, parameters or (), False)
        return self._take(done)

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> OneTripCursor:
        done = await self._connection.run(_statement, sql, parameters, True)
        return self._take(done)

    async def fetchall(self) -> Sequence[Any]:
        rows = self._rows[self._position :]
        self._position = len(self._rows)
        return rows

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        count = self.arraysize if size is None else size
        rows = self._rows[self._position : self._position + count]
        self._position += len(rows)
        return rows

    async def fetchone(self) -> Any:
        rows = await self.fetchmany(1)
        return rows[0] if rows else None

    async def close(self) -> None:
        self._rows = []


class OneTripConnection(aiosqlite.Connection):
    """An aiosqlite connection whose cursors take one trip per statement."""

    def cursor(self) -> OneTripCursor:  # type: ignore[override]
        return OneTripCursor(self)

    async def run(self, work: Any, *args: Any) -> Any:
        """Run ``work(sqlite3_connection, *args)`` in the database thread."""
        # aiosqlite's own queue into its thread; untyped upstream.
        submit = cast(Callable[..., Awaitable[Any]], self._execute)
        return await submit(work, self._conn, *args)


def one_trip_creator(url: str, **connect_args: Any) -> Any:
    """An ``async_creator`` for SQLAlchemy that opens :class:`OneTripConnection`.

    The database path and options come from the URL as SQLAlchemy reads them.
    """
    cargs, cparams = aiosqlite_dialect().create_connect_args(make_url(url))
    database = str(cargs[0])
    options: dict[str, Any] = {**cparams, **connect_args}

    async def create() -> OneTripConnection:
        connection = OneTripConnection(
            lambda: sqlite3.connect(database, **options), iter_chunk_size=64
        )
        # Like SQLAlchemy's own aiosqlite setup: the thread must not keep the
        # process alive at exit.
        connection._thread.daemon = True
        await connection
        return connection

    return create
