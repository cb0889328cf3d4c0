"""Recording activities: the one door through which every event enters the outbox.

The ingest API, tracking, mailing and feedback all hand their events to a
:class:`Recorder`. In one transaction it drops what is already recorded (same
``uuid``), numbers the rest (``metric_id``), decides per event whether its brand's
installation sends it, and writes the outbox rows. Only after the commit does it
return, and only then are the fresh events handed to this process's workers.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import case, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.delivery import outbox
from pegabridge.delivery.engine import DeliveryEngine
from pegabridge.delivery.notify import notify_recorded
from pegabridge.delivery.outbox import Leased, NewEvent, State
from pegabridge.events.metrics import Activity, Metric, activity_of, parse_activities
from pegabridge.events.models import BaseEvent
from pegabridge.metrics import observe_recorded
from pegabridge.store.tables import installations, sequences
from pegabridge.store.writer import GroupCommitter


@dataclass(frozen=True)
class Submitted:
    """An event to record; ``has_metric_id`` keeps a sender's own ``metric_id``."""

    event: BaseEvent
    has_metric_id: bool = False


@dataclass
class RecordResult:
    """What became of each event handed in, in order."""

    uuids: list[str] = field(default_factory=list)
    # per uuid: pending, duplicate, or skipped:<reason>
    states: list[str] = field(default_factory=list)
    payloads: dict[str, str] = field(default_factory=dict)

    def count(self) -> dict[str, int]:
        return dict(Counter(self.states))

    def part(self, offset: int, size: int) -> RecordResult:
        """The result of ``size`` events from ``offset`` on."""
        uuids = self.uuids[offset : offset + size]
        return RecordResult(
            uuids=uuids,
            states=self.states[offset : offset + size],
            payloads={u: self.payloads[u] for u in uuids if u in self.payloads},
        )


@dataclass
class _Request:
    activities: list[Submitted]
    done: asyncio.Future[RecordResult]


def _settle(
    done: asyncio.Future[RecordResult], outcome: RecordResult | Exception
) -> None:
    if done.done():
        return
    if isinstance(outcome, Exception):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


@dataclass(frozen=True)
class _Route:
    installation_id: int | None
    state: State
    skip_reason: str = ""


class Recorder:
    """Records events durably and hands fresh ones to the delivery workers."""

    def __init__(
        self, committer: GroupCommitter, engine: DeliveryEngine | None = None
    ) -> None:
        self._committer = committer
        self._engine = engine
        self._waiting: list[_Request] = []
        self._drainer: asyncio.Task[None] | None = None

    async def record(self, items: Sequence[Submitted | BaseEvent]) -> RecordResult:
        """Record ``items``; returns after the transaction that holds them committed.

        Requests that arrive while a transaction is being written are recorded together
        in the next one, with one statement of each kind for all of them: under load
        the cost per event falls instead of the queue growing.
        """
        activities = [
            i if isinstance(i, Submitted) else Submitted(i, has_metric_id=False)
            for i in items
        ]
        if not activities:
            return RecordResult()

        done: asyncio.Future[RecordResult] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Request(activities, done))
        if self._drainer is None:
            self._drainer = asyncio.create_task(self._drain(), name="recorder")
        return await done

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                await self._record_group(group)
        finally:
            self._drainer = None

    async def _record_group(self, group: list[_Request]) -> None:
        try:
            result = await self._commit([a for r in group for a in r.activities])
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0].done, exc)
                return
            # Something in the shared transaction failed: record each request on its
            # own so that only the faulty one gets the error.
            for request in group:
                await self._record_group([request])
            return

        offset = 0
        for request in group:
            size = len(request.activities)
            _settle(request.done, result.part(offset, size))
            offset += size

    async def _commit(self, activities: list[Submitted]) -> RecordResult:
        reserved: dict[int, int] = {}

        async def operation(
            conn: AsyncConnection,
        ) -> tuple[RecordResult, list[NewEvent]]:
            # The committer runs this again when a shared transaction failed: give
            # back what the rolled-back run reserved, or the lane's room shrinks.
            self._unreserve(reserved)
            return await self._write(conn, activities, reserved)

        try:
            result, written = await self._committer.run(operation)
        except BaseException:
            self._unreserve(reserved)
            raise

        self._hand_over(written, reserved)
        observe_recorded([a.event for a in activities], result.states)
        return result

    def _unreserve(self, reserved: dict[int, int]) -> None:
        if self._engine is not None:
            for installation_id, count in reserved.items():
                self._engine.unreserve(installation_id, count)
        reserved.clear()

    async def _write(
        self,
        conn: AsyncConnection,
        activities: list[Submitted],
        reserved: dict[int, int],
    ) -> tuple[RecordResult, list[NewEvent]]:
        now = time.time()
        result = RecordResult()
        seen = await outbox.existing_uuids(conn, [a.event.uuid for a in activities])
        fresh = _first_of_each_uuid(activities, seen)
        routes = await _routes(conn, [a.event for a in fresh])
        numbered = await _number(conn, fresh)

        new_events = []
        for activity in activities:
            event = numbered.get(id(activity))
            result.uuids.append(activity.event.uuid)
            if event is None:
                result.states.append("duplicate")
                continue
            route = routes[id(activity.event)]
            payload = event.to_json()
            result.payloads[event.uuid] = payload
            result.states.append(
                "pending"
                if route.state is State.PENDING
                else f"skipped:{route.skip_reason}"
            )
            new_events.append(_new_event(event, payload, route))

        lease = self._reserve(new_events, reserved)
        await outbox.insert(conn, new_events, now, lease)
        if lease is None and any(e.state is State.PENDING for e in new_events):
            # No worker here took them: wake the other nodes' workers on commit.
            await notify_recorded(conn)
        return result, new_events

    def _reserve(
        self, events: list[NewEvent], reserved: dict[int, int]
    ) -> tuple[str, float] | None:
        if self._engine is None:
            return None
        per_installation = Counter(
            e.installation_id
            for e in events
            if e.state is State.PENDING and e.installation_id is not None
        )
        for installation_id, count in per_installation.items():
            if not self._engine.reserve(installation_id, count):
                for taken, taken_count in reserved.items():
                    self._engine.unreserve(taken, taken_count)
                reserved.clear()
                return None
            reserved[installation_id] = count
        if not reserved:
            return None
        return self._engine.node, time.time() + self._engine.lease_s

    def _hand_over(self, written: list[NewEvent], reserved: dict[int, int]) -> None:
        if self._engine is None or not reserved:
            return
        now = time.time()
        # The rows were leased when they were written, a moment before now: count the
        # lease from a second earlier to stay on the safe side.
        lease_until = now + self._engine.lease_s - 1.0
        per_installation: dict[int, list[Leased]] = defaultdict(list)
        for event in written:
            if event.state is State.PENDING and event.installation_id in reserved:
                per_installation[event.installation_id].append(
                    Leased(
                        event.uuid,
                        event.installation_id,
                        event.payload,
                        0,
                        now,
                        lease_until=lease_until,
                    )
                )
        for installation_id, leased in per_installation.items():
            self._engine.offer(installation_id, leased)


def _first_of_each_uuid(activities: list[Submitted], seen: set[str]) -> list[Submitted]:
    fresh = []
    taken = set(seen)
    for activity in activities:
        if activity.event.uuid in taken:
            continue
        taken.add(activity.event.uuid)
        fresh.append(activity)
    return fresh


async def _routes(conn: AsyncConnection, events: list[BaseEvent]) -> dict[int, _Route]:
    pairs = {(e.portal_id, e.brand_id) for e in events}
    found: dict[tuple[int, int], tuple[int, str, frozenset[Activity]]] = {}
    if pairs:
        rows = await conn.execute(
            select(
                installations.c.id,
                installations.c.portal_id,
                installations.c.brand_id,
                installations.c.state,
                installations.c.activities,
            ).where(
                tuple_(installations.c.portal_id, installations.c.brand_id).in_(pairs),
                installations.c.state != "uninstalled",
            )
        )
        for r in rows:
            found[(r.portal_id, r.brand_id)] = (
                r.id,
                r.state,
                parse_activities(r.activities),
            )
    return {id(e): _route(e, found.get((e.portal_id, e.brand_id))) for e in events}


def _route(
    event: BaseEvent, installation: tuple[int, str, frozenset[Activity]] | None
) -> _Route:
    if installation is None:
        return _Route(None, State.SKIPPED, "no-installation")
    installation_id, state, chosen = installation
    if state == "draft":
        return _Route(installation_id, State.SKIPPED, "not-activated")
    if activity_of(Metric(event.metric)) not in chosen:
        return _Route(installation_id, State.SKIPPED, "not-chosen")
    return _Route(installation_id, State.PENDING)


async def _number(
    conn: AsyncConnection, activities: list[Submitted]
) -> dict[int, BaseEvent]:
    """Number each event without a ``metric_id`` in its portal's metric sequence."""
    needed = Counter(
        (a.event.portal_id, a.event.metric)
        for a in activities
        if not a.has_metric_id and a.event.metric != Metric.BROADCASTS
    )
    await _respect_given_ids(conn, activities)
    next_ids = {
        key: await _allocate(conn, *key, count) for key, count in needed.items()
    }

    numbered: dict[int, BaseEvent] = {}
    for activity in activities:
        key = (activity.event.portal_id, activity.event.metric)
        if key in next_ids and not activity.has_metric_id:
            numbered[id(activity)] = activity.event.model_copy(
                update={"metric_id": next_ids[key]}
            )
            next_ids[key] += 1
        else:
            numbered[id(activity)] = activity.event
    return numbered


async def _respect_given_ids(
    conn: AsyncConnection, activities: list[Submitted]
) -> None:
    """Move each sequence past the ``metric_id`` values senders chose themselves.

    A number we make later then never repeats one a sender already used.
    """
    highest: dict[tuple[int, str], int] = {}
    for a in activities:
        if a.has_metric_id and a.event.metric != Metric.BROADCASTS:
            key = (a.event.portal_id, a.event.metric)
            highest[key] = max(highest.get(key, 0), a.event.metric_id)

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for (portal_id, name), value in highest.items():
        statement = dialect.insert(sequences).values(
            portal_id=portal_id, name=name, last_value=value
        )
        statement = statement.on_conflict_do_update(
            index_elements=["portal_id", "name"],
            set_={
                "last_value": case(
                    (sequences.c.last_value < value, value),
                    else_=sequences.c.last_value,
                )
            },
        )
        await conn.execute(statement)


async def _allocate(
    conn: AsyncConnection, portal_id: int, name: str, count: int
) -> int:
    """Reserve ``count`` numbers of a sequence; returns the first one."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(sequences).values(
        portal_id=portal_id, name=name, last_value=count
    )
    statement = statement.on_conflict_do_update(
        index_elements=["portal_id", "name"],
        set_={"last_value": sequences.c.last_value + count},
    ).returning(sequences.c.last_value)
    last = int((await conn.execute(statement)).scalar_one())
    return last - count + 1


def _new_event(event: BaseEvent, payload: str, route: _Route) -> NewEvent:
    return NewEvent(
        uuid=event.uuid,
        portal_id=event.portal_id,
        brand_id=event.brand_id,
        metric=event.metric,
        metric_id=event.metric_id,
        customer_id=event.customer_id,
        payload=payload,
        installation_id=route.installation_id,
        state=route.state,
        skip_reason=route.skip_reason,
    )
