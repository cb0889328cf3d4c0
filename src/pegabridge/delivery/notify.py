"""Waking the workers of every node when events are recorded (PostgreSQL LISTEN/NOTIFY).

A recorder that commits pending events which no worker of its own process took sends
a notification on the ``pegabridge_outbox`` channel in the same transaction, so the
server delivers it exactly when the events become visible. Every delivery process
listens on a dedicated connection (outside the pool) and wakes its poller at once,
instead of at the next poll.

Notifications are a shortcut, never the only way: the poller still looks at the outbox
every ``poll_interval_s``, so a lost notification or a lost listening connection only
delays events. The listener reconnects with a growing pause after a loss and wakes the
poller after each reconnection, to catch up with what it may have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

CHANNEL = "pegabridge_outbox"


async def notify_recorded(conn: AsyncConnection) -> None:
    """Queue a notification that fresh events are due; the server sends it on commit.

    Does nothing on SQLite, where every writer is in the same process. Notifications
    with the same payload in one transaction are folded into one by the server, so a
    group commit of many records sends one.
    """
    if conn.dialect.name != "postgresql":
        return
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def asyncpg_dsn(database_url: str) -> str | None:
    """The plain ``postgresql://`` DSN of a SQLAlchemy URL; None for other databases."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class OutboxListener:
    """Listens for new-event notifications and calls ``on_notify`` for each one.

    ``on_notify`` must be cheap and must not block (typically: set an event).
    """

    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[], None],
        connect_timeout_s: float = 5.0,
        keepalive_s: float = 10.0,
        max_backoff_s: float = 10.0,
    ) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._connect_timeout_s = connect_timeout_s
        self._keepalive_s = keepalive_s
        self._max_backoff_s = max_backoff_s
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None
        self.connected = asyncio.Event()
        self.notifications = 0
        self.connections = 0

    async def start(self) -> None:
        """Start listening in the background; returns at once."""
        self._task = asyncio.create_task(self._run(), name="outbox-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        backoff_s = 0.1
        while True:
            try:
                await self._listen_until_lost()
                backoff_s = 0.1
            except Exception as exc:
                # The listener must outlive any loss of its connection.
                log.warning(
                    "listening for new events failed; polling meanwhile",
                    extra={
                        "event": "delivery.listen_failed",
                        "error": f"{type(exc).__name__}: {exc}"[:200],
                        "wait_s": backoff_s,
                    },
                )
            finally:
                self.connected.clear()
                await self._close()
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, self._max_backoff_s)

    async def _listen_until_lost(self) -> None:
        lost = asyncio.Event()
        self._connection = await asyncpg.connect(
            self._dsn, timeout=self._connect_timeout_s
        )
        self._connection.add_termination_listener(lambda _conn: lost.set())
        await self._connection.add_listener(CHANNEL, self._notified)

        self.connections += 1
        self.connected.set()
        log.info("listening for new events", extra={"event": "delivery.listening"})
        # Events recorded while nobody listened are found by this extra look.
        self._on_notify()

        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._keepalive_s)
                break
            await self._ping()
        log.warning(
            "listening connection lost", extra={"event": "delivery.listen_lost"}
        )

    async def _ping(self) -> None:
        # A connection can die without a word (a cut network); asking it a question
        # is the only way to find out.
        await self._connection.fetchval("SELECT 1", timeout=self._connect_timeout_s)

    def _notified(self, _conn: object, _pid: int, _channel: str, _payload: str) -> None:
        self.notifications += 1
        self._on_notify()

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), 2.0)
        if not connection.is_closed():
            connection.terminate()
