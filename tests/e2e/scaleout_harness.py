"""Several ``pegabridge worker`` processes on one PostgreSQL database, and their feed.

The test process plays the platform: it owns the receiver on loopback (counting every
uuid it is sent), records events through the real recorder, and starts, kills and
restarts worker processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from pegabridge.config import Settings
from pegabridge.events.metrics import Activity
from pegabridge.events.models import OpenEvent
from pegabridge.installs import service
from pegabridge.installs.service import InstallSettings
from pegabridge.sandbox import Received, SandboxEndpoint
from pegabridge.web.runtime import Runtime

PG_ADMIN_DSN = os.environ.get(
    "PEGABRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)
PEGABRIDGE = str(Path(sys.executable).with_name("pegabridge"))
SECRET_KEY = "scaleout-secret"
PORTAL, BRAND = 1746, 1


def postgres_cluster() -> tuple[str, str]:
    """The (version, name) of the local PostgreSQL cluster, for ``pg_ctlcluster``."""
    versions = sorted(os.listdir("/etc/postgresql"))
    return versions[-1], "main"


async def pg_admin(statement: str) -> None:
    """Run one statement on the administration database."""
    conn = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A PostgreSQL database of its own (SQLAlchemy URL), dropped afterwards."""
    name = f"pb_scale_{uuid.uuid4().hex[:12]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        await wait_for_postgres()
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def wait_for_postgres(timeout_s: float = 60.0) -> None:
    """Return once the server accepts connections (after a restart)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            await pg_admin("SELECT 1")
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


class CountingReceiver:
    """Answers 2xx to every event and counts how often each uuid arrived."""

    def __init__(self, password: str = "s3cret") -> None:
        self.counts: Counter[str] = Counter()
        self.endpoint = SandboxEndpoint("pega", password, responder=self._count)
        self.endpoint.received = _Discard(self)
        self.refused = 0

    async def start(self) -> None:
        await self.endpoint.start()

    async def stop(self) -> None:
        await self.endpoint.stop()

    def _count(self, received: Received) -> tuple[int, str] | None:
        marker = received.body.find(b'"uuid":"')
        self.counts[received.body[marker + 8 : marker + 44].decode()] += 1
        return 200, "{}"

    def missing(self, uuids: Sequence[str]) -> list[str]:
        return [u for u in uuids if u not in self.counts]

    def duplicates(self) -> int:
        return sum(self.counts.values()) - len(self.counts)


class _Discard(list[Received]):
    """A request list that keeps nothing (20,000 bodies need not stay in memory) but
    counts the requests refused for wrong credentials."""

    def __init__(self, receiver: CountingReceiver) -> None:
        super().__init__()
        self._receiver = receiver

    def append(self, item: Received) -> None:
        if not item.authorized:
            self._receiver.refused += 1


def worker_env(database_url: str, var_dir: Path, **overrides: str) -> dict[str, str]:
    """The environment of a worker process: short leases and polls for a test."""
    env = dict(os.environ)
    env.update(
        PEGABRIDGE_DATABASE_URL=database_url,
        PEGABRIDGE_SECRET_KEY=SECRET_KEY,
        PEGABRIDGE_VAR_DIR=str(var_dir),
        PEGABRIDGE_LEASE_S="3",
        PEGABRIDGE_POLL_INTERVAL_S="0.2",
        PEGABRIDGE_MEMORY_QUEUE_LIMIT="2000",
        PEGABRIDGE_LANE_CONCURRENCY="32",
        PEGABRIDGE_RETRY_BASE_S="0.2",
        PEGABRIDGE_RETRY_MAX_DELAY_S="1",
        PEGABRIDGE_RETRY_JITTER="0",
        PEGABRIDGE_CIRCUIT_THRESHOLD="1000000",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


@dataclass
class Workers:
    """``pegabridge worker`` processes, each one startable, killable, restartable."""

    env: dict[str, str]
    log_dir: Path
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: Counter[int] = field(default_factory=Counter)
    kills: int = 0

    def start(self, index: int) -> None:
        self.starts[index] += 1
        log = (self.log_dir / f"worker-{index}.log").open("ab")
        self.processes[index] = subprocess.Popen(
            [PEGABRIDGE, "worker"], env=self.env, stdout=log, stderr=log
        )
        log.close()

    def start_all(self, count: int) -> None:
        for index in range(count):
            self.start(index)

    def kill(self, index: int) -> None:
        process = self.processes[index]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.kills += 1

    def delivering(self) -> list[int]:
        """The workers whose latest start got as far as delivering."""
        return [
            index
            for index in sorted(self.processes)
            if (self.log_dir / f"worker-{index}.log")
            .read_bytes()
            .count(b'"delivery.started"')
            >= self.starts[index]
        ]

    async def kill_and_restart_at_random(
        self, stop: asyncio.Event, every_s: float, down_s: float
    ) -> None:
        """Until ``stop``: SIGKILL a random worker now and then, and start it again.

        Only a worker that is delivering is killed, and only while another one is
        delivering too: on a loaded machine a start takes seconds, and killing workers
        that are still starting would test nothing.
        """
        rng = random.Random()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), rng.uniform(0.5, 1.5) * every_s)
                return
            delivering = self.delivering()
            if len(delivering) < 2:
                continue
            index = rng.choice(delivering)
            self.kill(index)
            await asyncio.sleep(down_s)
            self.start(index)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")[-3000:]
            for path in sorted(self.log_dir.glob("worker-*.log"))
        )


def platform_settings(database_url: str, var_dir: Path) -> Settings:
    """Settings of the test process itself: it records, it does not deliver."""
    return Settings(
        var_dir=var_dir,
        database_url=database_url,
        secret_key=SECRET_KEY,
        db_listen=False,
    )


async def install(runtime: Runtime, endpoint_url: str, password: str = "s3cret") -> int:
    """Portal, brand and an active installation sending every activity."""

    async def act(conn: object) -> int:
        from sqlalchemy.ext.asyncio import AsyncConnection

        assert isinstance(conn, AsyncConnection)
        await service.create_portal(conn, PORTAL, "mokup")
        await service.create_brand(conn, PORTAL, BRAND, "Mok-Up")
        values = InstallSettings(
            endpoint_url=endpoint_url,
            username="pega",
            password=password,
            activities=frozenset(Activity),
        )
        installation = await service.save_installation(
            conn, runtime.vault, PORTAL, BRAND, values, activate=True
        )
        return installation.id

    return await runtime.committer.run(act)


def open_events(count: int) -> list[OpenEvent]:
    """``count`` open events, each with a uuid of its own."""
    now = int(time.time())
    return [
        OpenEvent.model_validate(
            {
                "uuid": str(uuid.uuid4()),
                "metric": "opens",
                "metric_timestamp": now,
                "portal_id": PORTAL,
                "portal_name": "mokup",
                "brand_id": BRAND,
                "brand_name": "Mok-Up",
                "customer_id": 13,
                "email_address": "person@example.com",
                "broadcast_id": 719,
                "broadcast_type": "MAIL",
                "broadcast_event_type": "SINGLEMAIL",
                "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/81.0",
                "os": "Windows",
                "browser": "Chrome",
            }
        )
        for _ in range(count)
    ]


async def record_all(
    runtime: Runtime, events: Sequence[OpenEvent], chunk: int = 500
) -> int:
    """Record every event, retrying a chunk until the database takes it.

    A retry carries the same uuids, so a chunk that was committed before its
    acknowledgement got lost is not recorded twice. Returns the retries needed.
    """
    retries = 0
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        while True:
            try:
                await runtime.recorder.record(part)
                break
            except Exception:
                retries += 1
                await asyncio.sleep(0.3)
    return retries


async def wait_until_delivered(
    receiver: CountingReceiver, uuids: Sequence[str], timeout_s: float
) -> list[str]:
    """Wait until every uuid arrived; the ones still missing at the deadline."""
    wanted = set(uuids)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if wanted.issubset(receiver.counts.keys()):
            return []
        await asyncio.sleep(0.1)
    return receiver.missing(uuids)


async def pending_rows(database_url: str) -> int:
    """Outbox rows not delivered yet (pending or dead)."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE state <> 'delivered'"
        )
        return count
    finally:
        await conn.close()


async def outbox_summary(database_url: str) -> list[str]:
    """The rows not delivered yet, grouped, to explain a failure: state, whether a
    lease is held, and how far the lease and the next attempt lie from now."""
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT state, leased_by IS NOT NULL AS leased, count(*) AS n,"
            " round(min(lease_until - extract(epoch FROM now()))::numeric, 1) AS lease,"
            " round(min(next_attempt_at - extract(epoch FROM now()))::numeric, 1)"
            " AS due, max(attempts) AS attempts, max(last_error) AS error"
            " FROM outbox WHERE state <> 'delivered' GROUP BY 1, 2"
        )
        return [str(dict(row)) for row in rows]
    finally:
        await conn.close()
