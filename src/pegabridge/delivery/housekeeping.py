"""Housekeeping: delivered events and their attempt logs leave after the retention.

An event delivered longer than ``retention_s`` ago, and the log of its attempts, are
deleted in small batches, each its own short transaction through the process's writer,
so that delivery's own writes pass between two batches. On PostgreSQL rows locked by
another node's purge are skipped, so every node may run housekeeping at once.

Dead letters are never purged by age: their payload is kept until they are replayed or
an operator purges them by command (:func:`purge_dead`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Select, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.config import Settings
from pegabridge.delivery.outbox import State
from pegabridge.store.tables import delivery_attempts, outbox
from pegabridge.store.writer import GroupCommitter

log = logging.getLogger(__name__)

# The pause between two batches, so that delivery's writes are not kept waiting.
BATCH_PAUSE_S = 0.02


@dataclass
class Purged:
    """How many outbox rows and attempt log rows a purge deleted."""

    events: int = 0
    attempts: int = 0
    batches: int = 0

    def add(self, events: int, attempts: int) -> None:
        self.events += events
        self.attempts += attempts
        self.batches += 1


async def purge_delivered_batch(
    conn: AsyncConnection, cutoff: float, limit: int
) -> tuple[int, int]:
    """Delete up to ``limit`` events delivered before ``cutoff`` with their attempts.

    Returns (events, attempts) deleted.
    """
    chosen = (
        select(outbox.c.id)
        .where(
            outbox.c.state == State.DELIVERED.value,
            outbox.c.created_at < cutoff,
            outbox.c.delivered_at < cutoff,
        )
        .order_by(outbox.c.created_at)
        .limit(limit)
    )
    return await _delete_rows(conn, chosen, State.DELIVERED)


async def purge_dead_batch(
    conn: AsyncConnection,
    limit: int,
    before: float | None = None,
    installation_id: int | None = None,
    uuids: Sequence[str] | None = None,
) -> tuple[int, int]:
    """Delete up to ``limit`` dead letters (and their attempts) matching the filters."""
    chosen = select(outbox.c.id).where(outbox.c.state == State.DEAD.value)
    if before is not None:
        chosen = chosen.where(outbox.c.created_at < before)
    if installation_id is not None:
        chosen = chosen.where(outbox.c.installation_id == installation_id)
    if uuids is not None:
        chosen = chosen.where(outbox.c.uuid.in_(list(uuids)))
    return await _delete_rows(
        conn, chosen.order_by(outbox.c.id).limit(limit), State.DEAD
    )


async def _delete_rows(
    conn: AsyncConnection, chosen: Select[tuple[int]], state: State
) -> tuple[int, int]:
    if conn.dialect.name == "postgresql":
        chosen = chosen.with_for_update(skip_locked=True)
    ids = list((await conn.execute(chosen)).scalars())
    if not ids:
        return 0, 0

    attempts = await conn.execute(
        delete(delivery_attempts).where(delivery_attempts.c.outbox_id.in_(ids))
    )
    # The state is checked again: a row may have changed since it was chosen (SQLite).
    events = await conn.execute(
        delete(outbox).where(outbox.c.id.in_(ids), outbox.c.state == state.value)
    )
    return events.rowcount or 0, attempts.rowcount or 0


class Housekeeper:
    """Purges delivered events past the retention, now and then, in the background."""

    def __init__(self, committer: GroupCommitter, settings: Settings) -> None:
        self._committer = committer
        self._retention_s = settings.retention_s
        self._interval_s = settings.purge_interval_s
        self._batch = settings.purge_batch
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start purging in the background, first after a random part of the interval.

        The random start spreads the purges of nodes started together.
        """
        self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def stop(self) -> None:
        """Stop purging (a batch in progress is rolled back or committed as it goes)."""
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def purge_once(self, now: float | None = None) -> Purged:
        """Purge everything delivered before ``now - retention_s``, batch by batch."""
        cutoff = (now if now is not None else time.time()) - self._retention_s
        purged = Purged()
        while True:
            events, attempts = await self._committer.run(
                lambda conn: purge_delivered_batch(conn, cutoff, self._batch)
            )
            if events == 0 and attempts == 0:
                break
            purged.add(events, attempts)
            await asyncio.sleep(BATCH_PAUSE_S)

        if purged.batches:
            log.info(
                "delivered events purged",
                extra={
                    "event": "housekeeping.purged",
                    "events": purged.events,
                    "attempts": purged.attempts,
                    "batches": purged.batches,
                    "retention_s": self._retention_s,
                },
            )
        return purged

    async def _run(self) -> None:
        await asyncio.sleep(random.uniform(0, self._interval_s))
        while True:
            try:
                await self.purge_once()
            except Exception:
                log.exception(
                    "housekeeping failed; trying again later",
                    extra={"event": "housekeeping.failed"},
                )
            await asyncio.sleep(self._interval_s)
