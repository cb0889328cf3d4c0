"""Scale-out on PostgreSQL: ``pegabridge worker`` processes sharing one outbox.

Figures (issue 7):

- events per second end to end with 1, 2 and 4 worker processes: this process records
  ``count`` events through the real recorder (500 per transaction, as fast as it can)
  while the workers deliver them to a receiver on loopback; the clock runs from the
  first record to the last arrival;
- latency from record to arrival (p50, p99) at a steady 1,000 events/s, with 2 workers.

The receiver and the recording side share this process; each worker is a child
process; PostgreSQL runs on the same machine. ``python -m bench.bench_scaleout``
prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import percentile
from pegabridge.config import Settings
from pegabridge.events.metrics import Activity
from pegabridge.events.models import OpenEvent
from pegabridge.installs import service
from pegabridge.installs.service import InstallSettings
from pegabridge.sandbox import Received, SandboxEndpoint
from pegabridge.web.runtime import Runtime

ADMIN_DSN = os.environ.get(
    "PEGABRIDGE_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test"
)
SECRET = "bench-secret"
PEGABRIDGE = str(Path(sys.executable).with_name("pegabridge"))


class _Arrivals(list[Received]):
    """Keeps no request, only the first arrival time of each uuid."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}
        self.total = 0

    def append(self, item: Received) -> None:
        marker = item.body.find(b'"uuid":"')
        self.total += 1
        self.at.setdefault(item.body[marker + 8 : marker + 44].decode(), item.at)


def _events(count: int) -> list[OpenEvent]:
    now = int(time.time())
    return [
        OpenEvent.model_validate(
            {
                "uuid": str(uuid.uuid4()),
                "metric": "opens",
                "metric_timestamp": now,
                "portal_id": 1746,
                "portal_name": "mokup",
                "brand_id": 1,
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


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def _spawn_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PEGABRIDGE, "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class _Setup:
    """A fresh database, an installation, a receiver and N worker processes."""

    def __init__(self, workers: int, var_dir: Path) -> None:
        self.workers = workers
        self.var_dir = var_dir
        self.name = f"pb_bench_{uuid.uuid4().hex[:10]}"
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{self.name}"
        self.arrivals = _Arrivals()
        self.endpoint = SandboxEndpoint("pega", "s3cret")
        self.processes: list[subprocess.Popen[bytes]] = []
        self.runtime: Runtime | None = None

    async def __aenter__(self) -> _Setup:
        await _admin(f'CREATE DATABASE "{self.name}"')
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _start(self) -> None:
        self.endpoint.received = self.arrivals
        await self.endpoint.start()
        settings = Settings(
            var_dir=self.var_dir, database_url=self.url, secret_key=SECRET
        )
        self.runtime = await Runtime.open(settings, deliver=False)
        await self.runtime.committer.run(self._install)
        env = dict(
            os.environ,
            PEGABRIDGE_DATABASE_URL=self.url,
            PEGABRIDGE_SECRET_KEY=SECRET,
            PEGABRIDGE_VAR_DIR=str(self.var_dir),
            PEGABRIDGE_LANE_CONCURRENCY="32",
            PEGABRIDGE_MEMORY_QUEUE_LIMIT="4000",
        )
        self.processes = [_spawn_worker(env) for _ in range(self.workers)]
        await self._warm_up()

    async def _install(self, conn: Any) -> None:
        await service.create_portal(conn, 1746, "mokup")
        await service.create_brand(conn, 1746, 1, "Mok-Up")
        assert self.runtime is not None
        values = InstallSettings(
            endpoint_url=self.endpoint.url,
            username="pega",
            password="s3cret",
            activities=frozenset(Activity),
        )
        await service.save_installation(
            conn, self.runtime.vault, 1746, 1, values, activate=True
        )

    async def _warm_up(self) -> None:
        # Every worker is up once a few events recorded one by one have arrived.
        probes = _events(self.workers * 20)
        for probe in probes:
            await self.record([probe])
        await self.wait_for({p.uuid for p in probes}, 60.0)
        self.arrivals.at.clear()
        self.arrivals.total = 0

    async def record(self, events: list[OpenEvent]) -> None:
        assert self.runtime is not None
        await self.runtime.recorder.record(events)

    async def wait_for(self, uuids: set[str], timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while not uuids.issubset(self.arrivals.at.keys()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(uuids)} events not delivered in time")
            await asyncio.sleep(0.02)
        return max(self.arrivals.at[u] for u in uuids)

    async def __aexit__(self, *_exc: object) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.runtime is not None:
            await self.runtime.close()
        await self.endpoint.stop()
        await _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


async def _throughput(workers: int, count: int, var_dir: Path) -> dict[str, Any]:
    async with _Setup(workers, var_dir) as setup:
        events = _events(count)
        started = time.time()
        for start in range(0, count, 500):
            await setup.record(events[start : start + 500])
        recorded_s = time.time() - started
        last = await setup.wait_for({e.uuid for e in events}, 600.0)
        elapsed_s = last - started
        return {
            "workers": workers,
            "events": count,
            "events_per_s": round(count / elapsed_s),
            "recording_events_per_s": round(count / recorded_s),
            "duplicates": setup.arrivals.total - count,
        }


async def _latency(rate: int, seconds: float, var_dir: Path) -> dict[str, Any]:
    async with _Setup(2, var_dir) as setup:
        events = _events(int(rate * seconds))
        recorded_at: dict[str, float] = {}
        tick_s = 0.01
        per_tick = max(1, int(rate * tick_s))
        recording: list[asyncio.Task[None]] = []
        started = time.monotonic()
        for n, start in enumerate(range(0, len(events), per_tick)):
            await asyncio.sleep(max(0.0, started + n * tick_s - time.monotonic()))
            chunk = events[start : start + per_tick]
            now = time.time()
            for event in chunk:
                recorded_at[event.uuid] = now
            # Not awaited here: the pace holds even when a commit takes longer.
            recording.append(asyncio.create_task(setup.record(chunk)))
        offered_s = time.monotonic() - started
        await asyncio.gather(*recording)
        await setup.wait_for(set(recorded_at), 120.0)
        latencies_ms = [
            (setup.arrivals.at[u] - t) * 1000 for u, t in recorded_at.items()
        ]
        return {
            "workers": 2,
            "target_events_per_s": rate,
            "offered_events_per_s": round(len(events) / offered_s),
            "p50_ms": round(percentile(latencies_ms, 0.50), 1),
            "p99_ms": round(percentile(latencies_ms, 0.99), 1),
        }


async def _run(count: int, worker_counts: tuple[int, ...]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pb-bench-scaleout-") as tmp:
        var_dir = Path(tmp)
        throughput = [await _throughput(n, count, var_dir) for n in worker_counts]
        latency = await _latency(1000, 5.0, var_dir)
    return {
        "benchmark": "scaleout",
        "database": "postgresql",
        "cores": os.cpu_count(),
        "throughput": throughput,
        "latency_at_1000_per_s": latency,
    }


def run(
    count: int = 100_000, worker_counts: tuple[int, ...] = (1, 2, 4)
) -> dict[str, Any]:
    """Measure throughput with each number of workers, then latency at 1,000/s."""
    return asyncio.run(_run(count, worker_counts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    print(json.dumps(run(args.events), indent=2))


if __name__ == "__main__":
    main()
