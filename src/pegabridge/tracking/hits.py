"""Writing tracking hits durably, many at a time.

A hit is an event for the outbox plus a `tracking_hits` row (with the machine verdict
and its reason) and, sometimes, a change to the customer: a human open or click resets
the soft bounce count, an unsubscribe sets `unsubscribed_at`. `HitWriter.write` returns
only once all of it has committed, so a pixel or a redirect is answered only after its
hit is safe.

Hits that arrive while a batch is being written wait for the next batch, which is then
written as one `Recorder.record` call (one dedupe query, one numbering per metric, one
outbox insert) and one statement per kind of row: under load a flush to disk carries
hundreds of hits, never one fsync per hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.delivery.recorder import Recorder, RecordResult
from pegabridge.events.models import BaseEvent
from pegabridge.store.tables import customers, tracking_hits
from pegabridge.store.writer import GroupCommitter

logger = logging.getLogger(__name__)

MAX_BATCH: Final = 1000
REASON_LENGTH: Final = 64
"""Characters of `tracking_hits.machine_reason`."""
MAX_STORED_AGENT: Final = 4096
"""Characters of a User-Agent kept in `tracking_hits` (the event keeps it whole)."""


class HitKind(StrEnum):
    """What was hit; the value is `tracking_hits.kind`."""

    OPEN = "open"
    CLICK = "click"
    SHORT = "short"
    UNSUBSCRIBE = "unsubscribe"
    CONVERSION = "conversion"


@dataclass(frozen=True, slots=True)
class HitRow:
    """One `tracking_hits` row; `machine_reason` is `reason` or `reason:detail`."""

    portal_id: int
    broadcast_id: int
    kind: HitKind
    at: float
    link_id: int = 0
    client_ip: str = ""
    method: str = "GET"
    user_agent: str = ""
    machine_generated: bool = False
    machine_reason: str = ""
    event_uuid: str = ""

    def values(self) -> dict[str, Any]:
        """The row as column values, with long text cut to the column sizes."""
        return {
            "portal_id": self.portal_id,
            "broadcast_id": self.broadcast_id,
            "link_id": self.link_id,
            "kind": self.kind.value,
            "at": self.at,
            "client_ip": self.client_ip[:64],
            "method": self.method[:8],
            "user_agent": self.user_agent[:MAX_STORED_AGENT],
            "machine_generated": self.machine_generated,
            "machine_reason": self.machine_reason[:REASON_LENGTH],
            "event_uuid": self.event_uuid,
        }


@dataclass(frozen=True, slots=True)
class PendingHit:
    """Everything one hit writes. `event` None records the row only."""

    row: HitRow
    event: BaseEvent | None = None
    reset_soft_bounces_of: int = 0
    """Customer whose soft bounce count goes back to 0 (a human open or click)."""
    unsubscribe_customer: int = 0
    """Customer to mark unsubscribed (kept when already set)."""


@dataclass(frozen=True, slots=True)
class Written:
    """What became of a hit's event: `pending`, `duplicate`, `skipped:<why>`, `none`."""

    event_uuid: str
    state: str


class HitWriter:
    """Collects hits and writes them in shared batches; one per process."""

    def __init__(
        self, recorder: Recorder, committer: GroupCommitter, max_batch: int = MAX_BATCH
    ) -> None:
        self._recorder = recorder
        self._committer = committer
        self._max_batch = max_batch
        self._queue: list[tuple[PendingHit, asyncio.Future[Written]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0
        self.hits = 0

    async def write(self, hit: PendingHit) -> Written:
        """Write `hit`; return once its event, row and customer change committed."""
        done: asyncio.Future[Written] = asyncio.get_running_loop().create_future()
        self._queue.append((hit, done))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all(), name="hit-writer")
        return await done

    async def drain(self) -> None:
        """Wait until every hit handed in so far is written (for shutdown)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush_all(self) -> None:
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            try:
                written = await self._write_batch([hit for hit, _ in batch])
            except Exception as exc:
                logger.exception(
                    "tracking hits not written",
                    extra={"event": "tracking.write_failed", "size": len(batch)},
                )
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue

            for (_, done), result in zip(batch, written, strict=True):
                if not done.done():
                    done.set_result(result)

    async def _write_batch(self, batch: Sequence[PendingHit]) -> list[Written]:
        events = [hit.event for hit in batch if hit.event is not None]
        now = time.time()

        async def write_rows(conn: AsyncConnection) -> None:
            await _insert_rows(conn, batch)
            await _reset_soft_bounces(conn, batch, now)
            await _unsubscribe(conn, batch, now)

        # Both operations are queued on the committer together, so they normally share
        # one transaction and one flush; either way both have committed on return.
        recorded, _ = await asyncio.gather(
            self._record(events), self._committer.run(write_rows)
        )
        self.batches += 1
        self.hits += len(batch)
        return _outcomes(batch, recorded)

    async def _record(self, events: list[BaseEvent]) -> RecordResult:
        if not events:
            return RecordResult()
        return await self._recorder.record(events)


async def _insert_rows(conn: AsyncConnection, batch: Sequence[PendingHit]) -> None:
    await conn.execute(tracking_hits.insert(), [hit.row.values() for hit in batch])


async def _reset_soft_bounces(
    conn: AsyncConnection, batch: Sequence[PendingHit], now: float
) -> None:
    ids = sorted({hit.reset_soft_bounces_of for hit in batch} - {0})
    if not ids:
        return
    await conn.execute(
        update(customers)
        .where(customers.c.id.in_(ids), customers.c.bounce_count_soft != 0)
        .values(bounce_count_soft=0, updated_at=now)
    )


async def _unsubscribe(
    conn: AsyncConnection, batch: Sequence[PendingHit], now: float
) -> None:
    ids = sorted({hit.unsubscribe_customer for hit in batch} - {0})
    if not ids:
        return
    await conn.execute(
        update(customers)
        .where(customers.c.id.in_(ids), customers.c.unsubscribed_at.is_(None))
        .values(unsubscribed_at=now, updated_at=now)
    )


def _outcomes(batch: Sequence[PendingHit], recorded: RecordResult) -> list[Written]:
    # The recorder answers in the order the events were handed in.
    states = iter(zip(recorded.uuids, recorded.states, strict=True))
    outcomes = []
    for hit in batch:
        if hit.event is None:
            outcomes.append(Written(event_uuid="", state="none"))
            continue
        event_uuid, state = next(states)
        outcomes.append(Written(event_uuid, state))
    return outcomes


def stable_uuid(secret: bytes, *parts: object) -> str:
    """A UUID in version-4 form that is always the same for the same `parts`.

    Used where one activity must give one event however often it is hit (unsubscribing
    twice, a conversion reported again with its reference): the recorder drops a uuid
    it has seen. Keyed with a server secret, so no one can predict, and take first, the
    uuid of another portal's activity.
    """
    message = "\x1f".join(str(part) for part in parts).encode("utf-8", "replace")
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))
