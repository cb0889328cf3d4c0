"""The outbox: events waiting for their endpoint, as rows of the ``outbox`` table.

An event's row is written in the same transaction that records the activity, so an event
is either fully recorded and due for delivery, or not recorded at all. A worker leases a
row before it sends it; a lease that runs out (the worker died) makes the row due again.
The row is marked delivered only after the endpoint answered 2xx.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.store.tables import delivery_attempts, installations, outbox


class State(StrEnum):
    """The delivery state of an event; the value is what the database stores."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class NewEvent:
    """An event ready to be written to the outbox."""

    uuid: str
    portal_id: int
    brand_id: int
    metric: str
    metric_id: int
    customer_id: int
    payload: str
    installation_id: int | None
    state: State
    skip_reason: str = ""


@dataclass(frozen=True)
class Leased:
    """An event a worker holds the lease of and may send."""

    uuid: str
    installation_id: int
    payload: str
    attempts: int
    created_at: float
    replayed_at: float | None = None
    # Until when this process holds the lease (Unix seconds); after that another
    # process may have claimed the event, so this one must not send it.
    lease_until: float = float("inf")

    @property
    def retry_window_start(self) -> float:
        """Where the retry schedule of this event counts from."""
        return self.replayed_at or self.created_at


@dataclass(frozen=True)
class Outcome:
    """What to store after one attempt of one event."""

    uuid: str
    installation_id: int
    attempt: int
    at: float
    duration_ms: float
    status_code: int | None
    # delivered, retry, dead, paused, released
    kind: str
    next_attempt_at: float | None = None
    error: str = ""
    response_excerpt: str = ""


async def existing_uuids(conn: AsyncConnection, uuids: Sequence[str]) -> set[str]:
    """The uuids among ``uuids`` that are already recorded."""
    found: set[str] = set()
    for start in range(0, len(uuids), 500):
        chunk = list(uuids[start : start + 500])
        rows = await conn.execute(select(outbox.c.uuid).where(outbox.c.uuid.in_(chunk)))
        found.update(row.uuid for row in rows)
    return found


async def insert(
    conn: AsyncConnection,
    events: Sequence[NewEvent],
    now: float,
    lease: tuple[str, float] | None = None,
) -> None:
    """Write new events; a uuid that is already recorded is silently kept as it was.

    ``lease`` (node, until) lets the recording process keep the fresh pending events
    for its own workers, so that the poller of another process does not race it.
    """
    if not events:
        return
    leased_by, lease_until = lease if lease else (None, None)
    rows = [
        {
            "uuid": e.uuid,
            "portal_id": e.portal_id,
            "brand_id": e.brand_id,
            "installation_id": e.installation_id,
            "metric": e.metric,
            "metric_id": e.metric_id,
            "customer_id": e.customer_id,
            "payload": e.payload,
            "state": e.state.value,
            "skip_reason": e.skip_reason,
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
            "leased_by": leased_by if e.state is State.PENDING else None,
            "lease_until": lease_until if e.state is State.PENDING else None,
        }
        for e in events
    ]
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(outbox).on_conflict_do_nothing(index_elements=["uuid"])
    await conn.execute(statement, rows)


async def claim_due(
    conn: AsyncConnection,
    node: str,
    now: float,
    lease_s: float,
    limit: int,
    installation_ids: Sequence[int],
) -> list[Leased]:
    """Lease up to ``limit`` due events of the given installations, oldest due first.

    On PostgreSQL rows leased by a concurrent claim are skipped (``SKIP LOCKED``),
    so any number of workers can claim at once without waiting for each other.
    """
    if not installation_ids or limit <= 0:
        return []
    due = (
        select(outbox.c.id)
        .where(
            outbox.c.state == State.PENDING.value,
            outbox.c.next_attempt_at <= now,
            outbox.c.installation_id.in_(list(installation_ids)),
            or_(outbox.c.lease_until.is_(None), outbox.c.lease_until < now),
        )
        .order_by(outbox.c.next_attempt_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)

    statement = (
        update(outbox)
        .where(outbox.c.id.in_(due.scalar_subquery()))
        .values(leased_by=node, lease_until=now + lease_s)
        .returning(
            outbox.c.uuid,
            outbox.c.installation_id,
            outbox.c.payload,
            outbox.c.attempts,
            outbox.c.created_at,
            outbox.c.replayed_at,
        )
    )
    rows = await conn.execute(statement)
    return [
        Leased(
            r.uuid,
            r.installation_id,
            r.payload,
            r.attempts,
            r.created_at,
            r.replayed_at,
            now + lease_s,
        )
        for r in rows
    ]


async def persist_outcomes(
    conn: AsyncConnection, node: str, outcomes: Sequence[Outcome]
) -> None:
    """Store the result of attempts and log each one in ``delivery_attempts``.

    A delivered event is marked delivered whoever holds its lease now (the endpoint has
    it); every other change applies only while this node still holds the lease.
    """
    if not outcomes:
        return
    await _mark_delivered(conn, [o for o in outcomes if o.kind == "delivered"])
    await _mark_failed(conn, node, [o for o in outcomes if o.kind != "delivered"])
    await _log_attempts(conn, [o for o in outcomes if o.kind != "released"])


async def _mark_delivered(conn: AsyncConnection, outcomes: list[Outcome]) -> None:
    if not outcomes:
        return
    statement = (
        update(outbox)
        .where(outbox.c.uuid == bindparam("b_uuid"), outbox.c.state == "pending")
        .values(
            state=State.DELIVERED.value,
            attempts=outbox.c.attempts + 1,
            delivered_at=bindparam("b_at"),
            last_status=bindparam("b_status"),
            last_error="",
            leased_by=None,
            lease_until=None,
        )
    )
    await conn.execute(
        statement,
        [{"b_uuid": o.uuid, "b_at": o.at, "b_status": o.status_code} for o in outcomes],
    )


async def _mark_failed(
    conn: AsyncConnection, node: str, outcomes: list[Outcome]
) -> None:
    if not outcomes:
        return
    statement = (
        update(outbox)
        .where(
            outbox.c.uuid == bindparam("b_uuid"),
            outbox.c.state == "pending",
            outbox.c.leased_by == node,
        )
        .values(
            state=bindparam("b_state"),
            attempts=outbox.c.attempts + bindparam("b_tried"),
            next_attempt_at=func.coalesce(
                bindparam("b_next"), outbox.c.next_attempt_at
            ),
            last_status=func.coalesce(bindparam("b_status"), outbox.c.last_status),
            last_error=bindparam("b_error"),
            leased_by=None,
            lease_until=None,
        )
    )
    await conn.execute(statement, [_failure_params(o) for o in outcomes])


def _failure_params(o: Outcome) -> dict[str, object]:
    return {
        "b_uuid": o.uuid,
        "b_state": State.DEAD.value if o.kind == "dead" else State.PENDING.value,
        "b_tried": 0 if o.kind == "released" else 1,
        "b_next": o.next_attempt_at,
        "b_status": o.status_code,
        "b_error": o.error[:500],
    }


async def _log_attempts(conn: AsyncConnection, outcomes: list[Outcome]) -> None:
    if not outcomes:
        return
    rows = await conn.execute(
        select(outbox.c.uuid, outbox.c.id).where(
            outbox.c.uuid.in_([o.uuid for o in outcomes])
        )
    )
    ids = {row.uuid: row.id for row in rows}
    await conn.execute(
        delivery_attempts.insert(),
        [
            {
                "outbox_id": ids.get(o.uuid, 0),
                "installation_id": o.installation_id,
                "attempt": o.attempt,
                "at": o.at,
                "duration_ms": o.duration_ms,
                "status_code": o.status_code,
                "outcome": o.kind,
                "error": o.error[:500],
                "response_excerpt": o.response_excerpt[:500],
            }
            for o in outcomes
        ],
    )


async def make_due_now(conn: AsyncConnection, installation_id: int, now: float) -> int:
    """Pull every waiting event of an installation forward to now (after a recovery)."""
    result = await conn.execute(
        update(outbox)
        .where(
            outbox.c.installation_id == installation_id,
            outbox.c.state == State.PENDING.value,
            outbox.c.next_attempt_at > now,
        )
        .values(next_attempt_at=now)
    )
    return result.rowcount or 0


async def replay_dead(
    conn: AsyncConnection,
    now: float,
    installation_id: int | None = None,
    uuids: Sequence[str] | None = None,
    since: float | None = None,
) -> int:
    """Make dead letters pending again, with their payload and ``uuid`` unchanged.

    Only events of a live installation come back: an uninstalled brand has nowhere to
    send them, so they stay dead letters.
    """
    live = select(installations.c.id).where(
        installations.c.state.in_(["active", "paused"])
    )
    conditions = [
        outbox.c.state == State.DEAD.value,
        outbox.c.installation_id.in_(live),
    ]
    if installation_id is not None:
        conditions.append(outbox.c.installation_id == installation_id)
    if uuids is not None:
        conditions.append(outbox.c.uuid.in_(list(uuids)))
    if since is not None:
        conditions.append(outbox.c.created_at >= since)
    result = await conn.execute(
        update(outbox)
        .where(and_(*conditions))
        .values(
            state=State.PENDING.value,
            next_attempt_at=now,
            replayed_at=now,
            leased_by=None,
            lease_until=None,
        )
    )
    return result.rowcount or 0
