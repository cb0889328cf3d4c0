"""Operating figures: what the dashboard, `pegabridge status` and `events show` read.

Read-only queries over the outbox and the attempt log, plus the one write an operator
makes: replaying dead letters. The queries stay on indexed columns (the outbox's
``created_at`` and ``(installation_id, state)``, the attempt log's
``(installation_id, at)``) so that a dashboard refresh costs little even with a long
history.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, Integer, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.delivery import outbox as outbox_sql
from pegabridge.events.metrics import Metric
from pegabridge.installs import service as installs
from pegabridge.store.tables import brands, delivery_attempts, outbox

RANGES_S: dict[str, tuple[float, float]] = {
    "15m": (900.0, 15.0),
    "1h": (3600.0, 60.0),
    "6h": (6 * 3600.0, 300.0),
    "24h": (24 * 3600.0, 900.0),
    "7d": (7 * 24 * 3600.0, 3 * 3600.0),
}
"""The chart ranges a person can pick: name -> (range, bucket width) in seconds."""

LATENCY_SAMPLE = 20_000
EXCERPT_CHARS = 300


# --- One installation at a glance. ---


@dataclass
class InstallationFigures:
    """An installation's state and figures, as the overview and ``status`` show them."""

    id: int
    portal_id: int
    brand_id: int
    brand_name: str
    state: str
    pause_reason: str
    endpoint_url: str
    # "basic", or "oauth2" for an OAuth 2.0 client (never a secret)
    auth: str = "basic"
    counts: dict[str, int] = field(default_factory=dict)
    oldest_pending_age_s: float | None = None
    last_success_at: float | None = None
    last_failure_at: float | None = None
    last_failure: str = ""
    attempts_24h: dict[str, int] = field(default_factory=dict)

    @property
    def pending(self) -> int:
        return self.counts.get("pending", 0)

    @property
    def dead(self) -> int:
        return self.counts.get("dead", 0)

    @property
    def failing(self) -> bool:
        """Whether the endpoint's latest answer was a failure."""
        if self.last_failure_at is None:
            return False
        return self.last_success_at is None or self.last_failure_at > (
            self.last_success_at
        )

    @property
    def success_rate_24h(self) -> float | None:
        """Delivered attempts among all attempts of the last 24 hours."""
        total = sum(self.attempts_24h.values())
        if not total:
            return None
        return self.attempts_24h.get("delivered", 0) / total


async def installation_figures(
    conn: AsyncConnection, portal_id: int | None = None, now: float | None = None
) -> list[InstallationFigures]:
    """Every live installation (of one portal, if given) with its figures."""
    now = time.time() if now is None else now
    names = await _brand_names(conn)
    found = []
    for inst in await installs.list_installations(conn, portal_id):
        figures = InstallationFigures(
            id=inst.id,
            portal_id=inst.portal_id,
            brand_id=inst.brand_id,
            brand_name=names.get((inst.portal_id, inst.brand_id), ""),
            state=inst.state.value,
            pause_reason=inst.pause_reason,
            endpoint_url=inst.endpoint_url,
            auth=inst.auth_kind.value,
        )
        await _fill_counts(conn, figures, now)
        await _fill_attempts(conn, figures, now)
        found.append(figures)
    return found


async def _brand_names(conn: AsyncConnection) -> dict[tuple[int, int], str]:
    rows = await conn.execute(select(brands.c.portal_id, brands.c.id, brands.c.name))
    return {(r.portal_id, r.id): r.name for r in rows}


async def _fill_counts(
    conn: AsyncConnection, figures: InstallationFigures, now: float
) -> None:
    rows = await conn.execute(
        select(outbox.c.state, func.count().label("n"), func.min(outbox.c.created_at))
        .where(outbox.c.installation_id == figures.id)
        .group_by(outbox.c.state)
    )
    for state, count, oldest in rows:
        figures.counts[state] = int(count)
        if state == "pending" and oldest is not None:
            figures.oldest_pending_age_s = max(now - float(oldest), 0.0)


async def _fill_attempts(
    conn: AsyncConnection, figures: InstallationFigures, now: float
) -> None:
    rows = await conn.execute(
        select(delivery_attempts.c.outcome, func.count())
        .where(
            delivery_attempts.c.installation_id == figures.id,
            delivery_attempts.c.at >= now - 24 * 3600.0,
        )
        .group_by(delivery_attempts.c.outcome)
    )
    figures.attempts_24h = {outcome: int(n) for outcome, n in rows}
    figures.last_success_at = await conn.scalar(
        select(func.max(delivery_attempts.c.at)).where(
            delivery_attempts.c.installation_id == figures.id,
            delivery_attempts.c.outcome == "delivered",
        )
    )
    failure = (
        await conn.execute(
            select(
                delivery_attempts.c.at,
                delivery_attempts.c.status_code,
                delivery_attempts.c.error,
                delivery_attempts.c.response_excerpt,
            )
            .where(
                delivery_attempts.c.installation_id == figures.id,
                delivery_attempts.c.outcome != "delivered",
            )
            .order_by(delivery_attempts.c.at.desc())
            .limit(1)
        )
    ).first()
    if failure is not None:
        figures.last_failure_at = failure.at
        figures.last_failure = describe_answer(
            failure.status_code, failure.error, failure.response_excerpt
        )


def describe_answer(status_code: int | None, error: str, excerpt: str) -> str:
    """One line about an endpoint's answer: ``HTTP 503: <answer>`` or the error."""
    if status_code is None:
        return error[:EXCERPT_CHARS] or "no answer"
    text = (excerpt or error).strip().replace("\n", " ")
    if len(text) > 120:
        text = text[:119] + "…"
    return f"HTTP {status_code}" + (f": {text}" if text else "")


# --- Time series for the charts. ---


@dataclass
class Series:
    """Chart data: bucket start times and one list of values per series."""

    range_name: str
    step_s: float
    t: list[float]
    recorded: dict[str, list[int]]
    delivered: list[int]
    failed: list[int]
    success_rate: list[float | None]
    backlog: list[int]
    latency_p50_s: list[float | None]
    latency_p95_s: list[float | None]
    latency_p99_s: list[float | None]

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready form for the dashboard's charts."""
        return {
            "range": self.range_name,
            "step_s": self.step_s,
            "t": self.t,
            "recorded": self.recorded,
            "delivered": self.delivered,
            "failed": self.failed,
            "success_rate": self.success_rate,
            "backlog": self.backlog,
            "latency_p50_s": self.latency_p50_s,
            "latency_p95_s": self.latency_p95_s,
            "latency_p99_s": self.latency_p99_s,
        }


def _bucket(
    conn: AsyncConnection, column: ColumnElement[float], start: float, step_s: float
) -> ColumnElement[int]:
    """The bucket number of a time; the values are never negative here.

    PostgreSQL's cast to integer rounds, SQLite's truncates: floor where it exists.
    """
    offset = (column - start) / step_s
    if conn.dialect.name == "postgresql":
        return cast(func.floor(offset), Integer)
    return cast(offset, Integer)


async def series(
    conn: AsyncConnection,
    installation_ids: Sequence[int],
    range_name: str = "6h",
    now: float | None = None,
) -> Series:
    """Events per metric, attempts, success rate, backlog and latency over a range."""
    if range_name not in RANGES_S:
        raise ValueError(f"unknown range {range_name!r}; choose {', '.join(RANGES_S)}")
    now = time.time() if now is None else now
    range_s, step_s = RANGES_S[range_name]
    count = math.ceil(range_s / step_s)
    start = math.floor(now / step_s) * step_s - (count - 1) * step_s
    ids = list(installation_ids)

    recorded = await _recorded_per_bucket(conn, ids, start, step_s, count)
    attempts = await _attempts_per_bucket(conn, ids, start, step_s, count)
    delivered = attempts["delivered"]
    failed = [
        attempts["retry"][i] + attempts["paused"][i] + attempts["dead"][i]
        for i in range(count)
    ]
    rates = [
        (delivered[i] / (delivered[i] + failed[i]))
        if delivered[i] + failed[i]
        else None
        for i in range(count)
    ]
    arrivals = [sum(per[i] for per in recorded.values()) for i in range(count)]
    departures = [delivered[i] + attempts["dead"][i] for i in range(count)]
    pending_now = await _pending_now(conn, ids)
    latency = await _latency_per_bucket(conn, ids, start, step_s, count)

    return Series(
        range_name=range_name,
        step_s=step_s,
        t=[start + i * step_s for i in range(count)],
        recorded=recorded,
        delivered=delivered,
        failed=failed,
        success_rate=rates,
        backlog=backlog_history(pending_now, arrivals, departures),
        latency_p50_s=[_percentile(values, 50) for values in latency],
        latency_p95_s=[_percentile(values, 95) for values in latency],
        latency_p99_s=[_percentile(values, 99) for values in latency],
    )


def backlog_history(
    pending_now: int, arrivals: Sequence[int], departures: Sequence[int]
) -> list[int]:
    """The backlog at the end of each bucket, walked back from the backlog now.

    The backlog before a bucket is the one after it, less what arrived in it, plus
    what left it (delivered or dead). Replays and uninstalls are not in the attempt
    log, so the history is an estimate; it never goes below zero.
    """
    history = [0] * len(arrivals)
    level = pending_now
    for i in range(len(arrivals) - 1, -1, -1):
        history[i] = max(level, 0)
        level = level - arrivals[i] + departures[i]
    return history


async def _recorded_per_bucket(
    conn: AsyncConnection, ids: list[int], start: float, step_s: float, count: int
) -> dict[str, list[int]]:
    bucket = _bucket(conn, outbox.c.created_at, start, step_s).label("b")
    rows = await conn.execute(
        select(bucket, outbox.c.metric, func.count())
        .where(
            outbox.c.created_at >= start,
            outbox.c.installation_id.in_(ids),
            outbox.c.state != "skipped",
        )
        .group_by(bucket, outbox.c.metric)
    )
    per_metric: dict[str, list[int]] = {m.value: [0] * count for m in Metric}
    for b, metric, n in rows:
        if 0 <= b < count and metric in per_metric:
            per_metric[metric][b] += int(n)
    return per_metric


async def _attempts_per_bucket(
    conn: AsyncConnection, ids: list[int], start: float, step_s: float, count: int
) -> dict[str, list[int]]:
    bucket = _bucket(conn, delivery_attempts.c.at, start, step_s).label("b")
    rows = await conn.execute(
        select(bucket, delivery_attempts.c.outcome, func.count())
        .where(
            delivery_attempts.c.installation_id.in_(ids),
            delivery_attempts.c.at >= start,
        )
        .group_by(bucket, delivery_attempts.c.outcome)
    )
    per_outcome: dict[str, list[int]] = defaultdict(lambda: [0] * count)
    for kind in ("delivered", "retry", "paused", "dead"):
        per_outcome[kind] = [0] * count
    for b, outcome, n in rows:
        if 0 <= b < count:
            per_outcome[outcome][b] += int(n)
    return per_outcome


async def _pending_now(conn: AsyncConnection, ids: list[int]) -> int:
    found = await conn.scalar(
        select(func.count()).where(
            outbox.c.installation_id.in_(ids), outbox.c.state == "pending"
        )
    )
    return int(found or 0)


async def _latency_per_bucket(
    conn: AsyncConnection, ids: list[int], start: float, step_s: float, count: int
) -> list[list[float]]:
    """Recording-to-answer latencies of events delivered in each bucket (a sample)."""
    rows = await conn.execute(
        select(outbox.c.created_at, outbox.c.replayed_at, outbox.c.delivered_at)
        .where(
            outbox.c.created_at >= start - step_s,
            outbox.c.installation_id.in_(ids),
            outbox.c.state == "delivered",
        )
        .order_by(outbox.c.created_at.desc())
        .limit(LATENCY_SAMPLE)
    )
    per_bucket: list[list[float]] = [[] for _ in range(count)]
    for created_at, replayed_at, delivered_at in rows:
        if delivered_at is None or delivered_at < start:
            continue
        b = int((delivered_at - start) // step_s)
        if 0 <= b < count:
            per_bucket[b].append(max(delivered_at - (replayed_at or created_at), 0.0))
    return per_bucket


def _percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(math.ceil(p / 100 * len(ordered)), 1)
    return round(ordered[rank - 1], 4)


# --- The delivery log. ---


@dataclass(frozen=True)
class EventRow:
    """One event of the delivery log."""

    id: int
    uuid: str
    installation_id: int | None
    portal_id: int
    brand_id: int
    metric: str
    customer_id: int
    state: str
    skip_reason: str
    attempts: int
    created_at: float
    delivered_at: float | None
    last_status: int | None
    last_error: str


@dataclass(frozen=True)
class AttemptRow:
    """One attempt of one event."""

    attempt: int
    at: float
    duration_ms: float
    status_code: int | None
    outcome: str
    error: str
    response_excerpt: str


@dataclass(frozen=True)
class EventDetail:
    """An event with its payload and every attempt, oldest first."""

    event: EventRow
    payload: str
    attempts: list[AttemptRow]


_EVENT_COLUMNS = (
    outbox.c.id,
    outbox.c.uuid,
    outbox.c.installation_id,
    outbox.c.portal_id,
    outbox.c.brand_id,
    outbox.c.metric,
    outbox.c.customer_id,
    outbox.c.state,
    outbox.c.skip_reason,
    outbox.c.attempts,
    outbox.c.created_at,
    outbox.c.delivered_at,
    outbox.c.last_status,
    outbox.c.last_error,
)


def _event_row(row: object) -> EventRow:
    return EventRow(**{c.name: getattr(row, c.name) for c in _EVENT_COLUMNS})


@dataclass(frozen=True)
class Search:
    """What the delivery log is filtered by; empty means any."""

    text: str = ""
    metric: str = ""
    state: str = ""
    installation_id: int | None = None
    portal_id: int | None = None
    limit: int = 100


def _search_conditions(search: Search) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    text = search.text.strip()
    if text.isdigit():
        conditions.append(
            or_(
                outbox.c.customer_id == int(text),
                outbox.c.uuid.startswith(text),
            )
        )
    elif text:
        conditions.append(outbox.c.uuid.startswith(text.lower()))
    if search.metric:
        conditions.append(outbox.c.metric == search.metric)
    if search.state:
        conditions.append(outbox.c.state == search.state)
    if search.installation_id is not None:
        conditions.append(outbox.c.installation_id == search.installation_id)
    if search.portal_id is not None:
        conditions.append(outbox.c.portal_id == search.portal_id)
    return conditions


async def search_events(conn: AsyncConnection, search: Search) -> list[EventRow]:
    """The newest events matching ``search``: by uuid (or its start), customer id,
    metric, state and installation."""
    statement = select(*_EVENT_COLUMNS).order_by(outbox.c.id.desc())
    conditions = _search_conditions(search)
    if conditions:
        statement = statement.where(and_(*conditions))
    rows = await conn.execute(statement.limit(max(min(search.limit, 1000), 1)))
    return [_event_row(r) for r in rows]


async def attempts_of(
    conn: AsyncConnection, outbox_ids: Sequence[int]
) -> dict[int, list[AttemptRow]]:
    """The attempts of several events, oldest first, by outbox id."""
    found: dict[int, list[AttemptRow]] = defaultdict(list)
    if not outbox_ids:
        return found
    rows = await conn.execute(
        select(
            delivery_attempts.c.outbox_id,
            delivery_attempts.c.attempt,
            delivery_attempts.c.at,
            delivery_attempts.c.duration_ms,
            delivery_attempts.c.status_code,
            delivery_attempts.c.outcome,
            delivery_attempts.c.error,
            delivery_attempts.c.response_excerpt,
        )
        .where(delivery_attempts.c.outbox_id.in_(list(outbox_ids)))
        .order_by(delivery_attempts.c.at, delivery_attempts.c.id)
    )
    for r in rows:
        found[r.outbox_id].append(
            AttemptRow(
                r.attempt,
                r.at,
                r.duration_ms,
                r.status_code,
                r.outcome,
                r.error[:EXCERPT_CHARS],
                r.response_excerpt[:EXCERPT_CHARS],
            )
        )
    return found


async def event_detail(conn: AsyncConnection, uuid: str) -> EventDetail | None:
    """An event by its exact uuid with payload and attempts; None when unknown."""
    row = (
        await conn.execute(
            select(*_EVENT_COLUMNS, outbox.c.payload).where(
                outbox.c.uuid == uuid.strip().lower()
            )
        )
    ).first()
    if row is None:
        return None
    event = _event_row(row)
    attempts = await attempts_of(conn, [event.id])
    return EventDetail(event, row.payload, attempts.get(event.id, []))


async def payloads_of(conn: AsyncConnection, uuids: Sequence[str]) -> dict[str, str]:
    """The JSON that is (or will be) sent for each of ``uuids``."""
    if not uuids:
        return {}
    rows = await conn.execute(
        select(outbox.c.uuid, outbox.c.payload).where(outbox.c.uuid.in_(list(uuids)))
    )
    return {r.uuid: r.payload for r in rows}


# --- Dead letters. ---


async def dead_uuids(
    conn: AsyncConnection,
    installation_id: int | None = None,
    since: float | None = None,
    uuids: Sequence[str] | None = None,
    portal_id: int | None = None,
) -> list[str]:
    """The uuids of dead letters matching the filters, oldest first."""
    conditions = [outbox.c.state == "dead"]
    if portal_id is not None:
        conditions.append(outbox.c.portal_id == portal_id)
    if installation_id is not None:
        conditions.append(outbox.c.installation_id == installation_id)
    if since is not None:
        conditions.append(outbox.c.created_at >= since)
    if uuids is not None:
        conditions.append(outbox.c.uuid.in_(list(uuids)))
    rows = await conn.execute(
        select(outbox.c.uuid).where(and_(*conditions)).order_by(outbox.c.id)
    )
    return [r.uuid for r in rows]


async def replay(
    conn: AsyncConnection, uuids: Sequence[str], now: float | None = None
) -> int:
    """Make these dead letters pending again (payload and uuid unchanged)."""
    if not uuids:
        return 0
    now = time.time() if now is None else now
    return await outbox_sql.replay_dead(conn, now, uuids=list(uuids))
