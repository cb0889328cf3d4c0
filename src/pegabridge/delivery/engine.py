"""The delivery workers: one lane per installation empties its share of the outbox.

A lane holds the events this process leased for one installation and a fixed number of
worker tasks, which bounds the concurrency per endpoint. Fresh events come in at once
from the recorder (the fast path); a poller leases due events for retries, for events of
other processes, and for what did not fit in memory. Results are written in batches.

One attempt is five small steps: take a leased event, POST it, judge the answer, decide
what follows, and queue that outcome for the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pegabridge.config import Settings
from pegabridge.delivery import outbox
from pegabridge.delivery.client import EndpointClient, EndpointConfig
from pegabridge.delivery.housekeeping import Housekeeper
from pegabridge.delivery.notify import OutboxListener, asyncpg_dsn
from pegabridge.delivery.outbox import Leased, Outcome
from pegabridge.delivery.retry import RetryPolicy, parse_retry_after
from pegabridge.delivery.verdict import AttemptResult, Verdict, judge
from pegabridge.installs import service as installs
from pegabridge.installs.vault import Vault, VaultError
from pegabridge.metrics import observe_attempt, observe_outcome
from pegabridge.store.tables import installations
from pegabridge.store.writer import GroupCommitter

log = logging.getLogger(__name__)

# An event is sent only while its lease has at least this long to run: a POST that
# starts just before the lease ends could finish after another process claimed it.
_LEASE_MARGIN_S = 1.0


def _refusal_reason(uses_oauth: bool, result: AttemptResult) -> str:
    """The pause reason of a refused attempt, in words for the marketer."""
    if result.token_refused:
        return result.error
    if uses_oauth:
        return (
            f"the endpoint refused the OAuth 2.0 access token (HTTP "
            f"{result.status_code}), a freshly fetched one too; check what the client "
            "registration may access in Pega, then resume"
        )
    return (
        f"the endpoint refused the username and password (HTTP "
        f"{result.status_code}); correct them and the waiting events are sent"
    )


def make_node_id() -> str:
    """A name for this process that no other process has, now or later."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuidlib.uuid4().hex[:8]}"


@dataclass
class Circuit:
    """Consecutive failures of an endpoint; open means: only probe, gently."""

    threshold: int
    probe_s: float
    failures: int = 0
    open_until: float = 0.0
    probe_in_flight: bool = False

    @property
    def is_open(self) -> bool:
        return self.failures >= self.threshold

    def record_failure(self, now: float) -> bool:
        """Count a failure; True when this failure opened the circuit."""
        self.failures += 1
        self.probe_in_flight = False
        if self.failures >= self.threshold:
            waits = min(self.failures - self.threshold, 6)
            self.open_until = now + self.probe_s * (2**waits)
            return self.failures == self.threshold
        return False

    def record_success(self) -> bool:
        """Count a success; True when it closed an open circuit."""
        was_open = self.is_open
        self.failures = 0
        self.open_until = 0.0
        self.probe_in_flight = False
        return was_open

    def may_probe(self, now: float) -> bool:
        return self.is_open and not self.probe_in_flight and now >= self.open_until


@dataclass
class Lane:
    """The events of one installation held by this process, and their workers."""

    installation_id: int
    config_version: int
    client: EndpointClient
    circuit: Circuit
    queue: asyncio.Queue[Leased] = field(default_factory=asyncio.Queue)
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    bad_requests: int = 0
    paused: bool = False
    reserved: int = 0
    # The last claim filled its batch: more events are probably due.
    more_due: bool = False

    @property
    def held(self) -> int:
        return self.queue.qsize() + self.reserved


class DeliveryEngine:
    """All lanes of this process, the poller that feeds them, and the result writer."""

    def __init__(
        self,
        engine: AsyncEngine,
        committer: GroupCommitter,
        vault: Vault,
        settings: Settings,
        node: str | None = None,
    ) -> None:
        self._db = engine
        self._committer = committer
        self._vault = vault
        self._settings = settings
        self.node = node or make_node_id()
        self.policy = RetryPolicy(
            base_s=settings.retry_base_s,
            max_delay_s=settings.retry_max_delay_s,
            max_age_s=settings.retry_max_age_s,
            jitter=settings.retry_jitter,
        )
        self._lanes: dict[int, Lane] = {}
        self._outcomes: list[Outcome] = []
        self._outcomes_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self.listener: OutboxListener | None = None
        self.housekeeper: Housekeeper | None = None
        self.delivered = 0
        self.failed_attempts = 0

    @property
    def lease_s(self) -> float:
        """How long a lease taken by this process lasts."""
        return self._settings.lease_s

    @property
    def running(self) -> bool:
        """Whether the poller and the result writer are alive (``/readyz`` asks)."""
        return (
            self._running
            and bool(self._tasks)
            and all(not task.done() for task in self._tasks)
        )

    # --- Life cycle. ---

    async def start(self) -> None:
        """Load the installations and start polling."""
        self._running = True
        await self._sync_lanes()
        self._tasks = [
            asyncio.create_task(self._poll_loop(), name="delivery-poller"),
            asyncio.create_task(self._flush_loop(), name="delivery-results"),
        ]
        await self._start_companions()
        log.info(
            "delivery started", extra={"event": "delivery.started", "node": self.node}
        )

    async def stop(self) -> None:
        """Stop the workers, write every outcome already known, release the rest."""
        self._running = False
        await self._stop_companions()
        for lane in list(self._lanes.values()):
            await self._close_lane(lane)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._flush_outcomes()
        log.info(
            "delivery stopped", extra={"event": "delivery.stopped", "node": self.node}
        )

    async def _start_companions(self) -> None:
        # On PostgreSQL other nodes record events too: listen for their notifications.
        dsn = asyncpg_dsn(self._settings.resolved_database_url())
        if dsn is not None and self._settings.db_listen:
            self.listener = OutboxListener(
                dsn, self.wake, self._settings.db_connect_timeout_s
            )
            await self.listener.start()
        self.housekeeper = Housekeeper(self._committer, self._settings)
        await self.housekeeper.start()

    async def _stop_companions(self) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if self.housekeeper is not None:
            await self.housekeeper.stop()

    def wake(self) -> None:
        """Ask the poller to look at the outbox now (after a resume or a replay)."""
        self._wake.set()

    # --- The fast path. ---

    def reserve(self, installation_id: int, count: int) -> bool:
        """Whether this process takes ``count`` fresh events of an installation itself.

        True only when its lane is sending and has room; the events must then be
        recorded leased by this node and handed over with :meth:`offer`.
        """
        lane = self._lanes.get(installation_id)
        if lane is None or lane.paused or lane.circuit.is_open:
            return False
        if lane.held + count > self._settings.memory_queue_limit:
            return False
        lane.reserved += count
        return True

    def unreserve(self, installation_id: int, count: int) -> None:
        """Give back a reservation whose events were not recorded after all."""
        lane = self._lanes.get(installation_id)
        if lane is not None:
            lane.reserved = max(lane.reserved - count, 0)

    def offer(self, installation_id: int, events: Sequence[Leased]) -> None:
        """Hand freshly committed, reserved events to their lane's workers."""
        lane = self._lanes.get(installation_id)
        if lane is None:
            return  # the lease runs out and the poller takes them
        lane.reserved = max(lane.reserved - len(events), 0)
        for event in events:
            lane.queue.put_nowait(event)

    # --- Lanes follow the installations table. ---

    async def _sync_lanes(self) -> None:
        async with self._db.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        installations.c.id,
                        installations.c.state,
                        installations.c.config_version,
                    ).where(installations.c.state.in_(["active", "paused"]))
                )
            ).all()
            wanted = {r.id: r for r in rows}
            for lane_id in list(self._lanes):
                if lane_id not in wanted:
                    await self._close_lane(self._lanes.pop(lane_id))
            for row in rows:
                await self._update_lane(conn, row.id, row.state, row.config_version)

    async def _update_lane(
        self, conn: AsyncConnection, installation_id: int, state: str, version: int
    ) -> None:
        lane = self._lanes.get(installation_id)
        if lane is not None and lane.config_version == version:
            return
        if lane is not None:
            await self._close_lane(self._lanes.pop(installation_id))
        try:
            config = await self._endpoint_config(conn, installation_id)
        except VaultError as exc:
            log.error(
                "installation credentials unreadable",
                extra={
                    "event": "delivery.vault_error",
                    "installation_id": installation_id,
                    "error": str(exc),
                },
            )
            return
        lane = Lane(
            installation_id=installation_id,
            config_version=version,
            client=EndpointClient(config),
            circuit=Circuit(
                self._settings.circuit_threshold, self._settings.circuit_probe_s
            ),
            paused=state != "active",
        )
        lane.workers = [
            asyncio.create_task(self._work(lane), name=f"lane-{installation_id}-{n}")
            for n in range(config.concurrency)
        ]
        self._lanes[installation_id] = lane

    async def _endpoint_config(
        self, conn: AsyncConnection, installation_id: int
    ) -> EndpointConfig:
        inst = await installs.get_installation(conn, installation_id)
        username, password = await installs.credentials(
            conn, self._vault, installation_id
        )
        return EndpointConfig(
            url=inst.endpoint_url,
            username=username,
            password=password,
            extra_headers=inst.extra_headers,
            connect_timeout_s=self._settings.connect_timeout_s,
            request_timeout_s=self._settings.request_timeout_s,
            concurrency=self._settings.lane_concurrency,
            oauth=await installs.oauth_client(conn, self._vault, installation_id),
            installation_id=installation_id,
        )

    async def _close_lane(self, lane: Lane) -> None:
        for worker in lane.workers:
            worker.cancel()
        for worker in lane.workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._release_queued(lane, "lane closed")
        await lane.client.close()

    def _release_queued(self, lane: Lane, why: str) -> None:
        now = time.time()
        while not lane.queue.empty():
            event = lane.queue.get_nowait()
            self._queue_outcome(
                Outcome(
                    event.uuid,
                    lane.installation_id,
                    event.attempts,
                    now,
                    0.0,
                    None,
                    "released",
                    next_attempt_at=None,
                    error=why,
                )
            )

    # --- The poller. ---

    async def _poll_loop(self) -> None:
        failures = 0
        while self._running:
            try:
                await self._sync_lanes()
                await self._claim_for_lanes()
                failures = 0
            except Exception:
                failures += 1
                log.exception(
                    "delivery poll failed",
                    extra={"event": "delivery.poll_failed", "failures": failures},
                )
            # While the database is unreachable, ask it less and less often.
            wait_s = min(self._settings.poll_interval_s * 2**failures, 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)
            self._wake.clear()

    async def _claim_for_lanes(self) -> None:
        now = time.time()
        for lane in list(self._lanes.values()):
            if lane.paused:
                continue
            if lane.circuit.is_open:
                room = 1 if lane.circuit.may_probe(now) else 0
            else:
                room = min(
                    self._settings.claim_batch,
                    self._settings.memory_queue_limit - lane.held,
                )
            if room <= 0:
                continue
            leased = await self._claim(lane.installation_id, now, room)
            lane.more_due = len(leased) >= room
            if leased and lane.circuit.is_open:
                lane.circuit.probe_in_flight = True
            for event in leased:
                lane.queue.put_nowait(event)

    async def _claim(self, installation_id: int, now: float, room: int) -> list[Leased]:
        async def operation(conn: AsyncConnection) -> list[Leased]:
            return await outbox.claim_due(
                conn, self.node, now, self._settings.lease_s, room, [installation_id]
            )

        return await self._committer.run(operation)

    # --- The workers. ---

    async def _work(self, lane: Lane) -> None:
        while True:
            event = await lane.queue.get()
            self._claim_more_if_low(lane)
            try:
                await self._attempt(lane, event)
            except Exception:
                # A worker that ended here would leave its lane one short for good,
                # and a lane with none left holds its events in memory unsent. The
                # event keeps its lease, so the poller hands it out again once it runs
                # out; nothing is lost by going on.
                log.exception(
                    "delivery attempt failed unexpectedly",
                    extra={
                        "event": "delivery.attempt_crashed",
                        "event_uuid": event.uuid,
                        "installation_id": lane.installation_id,
                    },
                )

    async def _attempt(self, lane: Lane, event: Leased) -> None:
        """Send one leased event, unless its lane stopped sending or its lease ended."""
        if lane.paused or (lane.circuit.is_open and not lane.circuit.probe_in_flight):
            self._queue_outcome(self._released(lane, event, "installation not sending"))
            return
        if time.time() + _LEASE_MARGIN_S >= event.lease_until:
            # Waited in memory past its lease: another process may own it now.
            self._queue_outcome(self._released(lane, event, "lease ran out"))
            return

        result = await lane.client.post(event.payload)
        await self._settle(lane, event, result)

    def _claim_more_if_low(self, lane: Lane) -> None:
        # A backlog drains at the speed of the endpoint, not of the poll interval:
        # claim the next batch once half of the last one is sent.
        if lane.more_due and lane.queue.qsize() <= self._settings.claim_batch // 2:
            lane.more_due = False
            self.wake()

    async def _settle(self, lane: Lane, event: Leased, result: AttemptResult) -> None:
        """Judge the answer, then deliver, pause, or schedule a retry."""
        verdict = judge(result)
        now = time.time()
        observe_attempt(
            lane.installation_id,
            result.status_code,
            result.duration_ms,
            event.retry_window_start,
            now,
        )

        if verdict is Verdict.DELIVERED:
            await self._on_delivered(lane, event, result, now)
            return

        self.failed_attempts += 1
        reason = self._pause_reason(lane, verdict, result)
        if reason:
            self._queue_outcome(self._outcome(lane, event, result, now, "paused", now))
            await self._pause(lane, reason)
            return

        if verdict is Verdict.RETRY:
            self._count_failure(lane, now)
        self._schedule_retry(lane, event, result, now)

    async def _on_delivered(
        self, lane: Lane, event: Leased, result: AttemptResult, now: float
    ) -> None:
        self.delivered += 1
        lane.bad_requests = 0
        if lane.circuit.record_success():
            await self._on_recovered(lane, now)
        self._queue_outcome(self._outcome(lane, event, result, now, "delivered"))

    def _pause_reason(self, lane: Lane, verdict: Verdict, result: AttemptResult) -> str:
        """Why this answer pauses the installation, or ``""`` when it does not."""
        if verdict is Verdict.PAUSE:
            return _refusal_reason(lane.client.uses_oauth, result)
        if verdict is not Verdict.BAD_REQUEST:
            return ""
        lane.bad_requests += 1
        if lane.bad_requests < self._settings.pause_after_400s:
            return ""

        credentials = (
            "OAuth 2.0 client" if lane.client.uses_oauth else "username and password"
        )
        return (
            f"the endpoint answered 400 to {lane.bad_requests} events in a row; Pega "
            f"answers 400 when authentication fails: check the {credentials}, "
            "then resume"
        )

    def _count_failure(self, lane: Lane, now: float) -> None:
        if not lane.circuit.record_failure(now):
            return
        log.warning(
            "endpoint failing; circuit opened",
            extra={
                "event": "delivery.circuit_opened",
                "installation_id": lane.installation_id,
                "failures": lane.circuit.failures,
            },
        )
        self._release_queued(lane, "circuit open")

    def _schedule_retry(
        self, lane: Lane, event: Leased, result: AttemptResult, now: float
    ) -> None:
        decision = self.policy.decide(
            event.attempts + 1,
            event.retry_window_start,
            now,
            parse_retry_after(result.retry_after, now),
        )
        if decision.is_dead:
            log.error(
                "event is a dead letter",
                extra={
                    "event": "delivery.dead_letter",
                    "event_uuid": event.uuid,
                    "installation_id": lane.installation_id,
                    "attempt": event.attempts + 1,
                    "status_code": result.status_code,
                },
            )
            self._queue_outcome(self._outcome(lane, event, result, now, "dead"))
            return
        log.warning(
            "delivery failed; retry scheduled",
            extra={
                "event": "delivery.retry_scheduled",
                "event_uuid": event.uuid,
                "installation_id": lane.installation_id,
                "attempt": event.attempts + 1,
                "status_code": result.status_code,
                "error": result.error,
                "wait_s": round(decision.wait_s, 3),
            },
        )
        self._queue_outcome(
            self._outcome(lane, event, result, now, "retry", decision.next_attempt_at)
        )

    async def _pause(self, lane: Lane, reason: str) -> None:
        if lane.paused:
            return
        lane.paused = True
        self._release_queued(lane, "installation paused")
        await self._committer.run(
            lambda conn: installs.pause(conn, lane.installation_id, reason)
        )
        log.warning(
            "installation paused",
            extra={
                "event": "delivery.installation_paused",
                "installation_id": lane.installation_id,
                "reason": reason,
            },
        )

    async def _on_recovered(self, lane: Lane, now: float) -> None:
        moved = await self._committer.run(
            lambda conn: outbox.make_due_now(conn, lane.installation_id, now)
        )
        log.info(
            "endpoint recovered; backlog due now",
            extra={
                "event": "delivery.circuit_closed",
                "installation_id": lane.installation_id,
                "backlog": moved,
            },
        )
        self.wake()

    def _outcome(
        self,
        lane: Lane,
        event: Leased,
        result: AttemptResult,
        now: float,
        kind: str,
        next_attempt_at: float | None = None,
    ) -> Outcome:
        return Outcome(
            uuid=event.uuid,
            installation_id=lane.installation_id,
            attempt=event.attempts + 1,
            at=now,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            kind=kind,
            next_attempt_at=next_attempt_at,
            error=result.error,
            response_excerpt=result.response_excerpt,
        )

    def _released(self, lane: Lane, event: Leased, why: str) -> Outcome:
        return Outcome(
            event.uuid,
            lane.installation_id,
            event.attempts,
            time.time(),
            0.0,
            None,
            "released",
            error=why,
        )

    # --- Results are written in batches. ---

    def _queue_outcome(self, outcome: Outcome) -> None:
        observe_outcome(outcome.installation_id, outcome.kind)
        self._outcomes.append(outcome)
        self._outcomes_ready.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._outcomes_ready.wait()
            self._outcomes_ready.clear()
            try:
                await self._flush_outcomes()
            except Exception:
                log.exception(
                    "writing delivery results failed",
                    extra={"event": "delivery.results_failed"},
                )
                await asyncio.sleep(1.0)

    async def _flush_outcomes(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        try:
            await self._committer.run(
                lambda conn: outbox.persist_outcomes(conn, self.node, batch)
            )
        except Exception:
            self._outcomes[:0] = batch
            raise

    # --- What the status pages show. ---

    def lane_stats(self) -> dict[int, dict[str, object]]:
        """Per installation: events held in memory, circuit and pause state."""
        return {
            lane.installation_id: {
                "held": lane.held,
                "circuit_open": lane.circuit.is_open,
                "paused": lane.paused,
            }
            for lane in self._lanes.values()
        }
