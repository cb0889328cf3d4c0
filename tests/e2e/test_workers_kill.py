"""Several ``pegabridge worker`` processes share one outbox on PostgreSQL.

Workers are killed with SIGKILL and started again at random while events flow, and in
a second test the database server itself is restarted in the middle: every event must
still reach the receiver at least once. How many arrived twice is printed (run with
``-s`` to see it) and stored as a test property.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from scaleout_harness import (
    CountingReceiver,
    Workers,
    fresh_database,
    install,
    open_events,
    outbox_summary,
    pending_rows,
    platform_settings,
    postgres_cluster,
    record_all,
    wait_for_postgres,
    wait_until_delivered,
    worker_env,
)

from pegabridge.web.runtime import Runtime

# The figure is 100,000 events; CI runs that (.ci/run sets the variable), while
# a developer's `make test` stays within minutes with 20,000.
EVENTS = int(os.environ.get("PEGABRIDGE_KILL_TEST_EVENTS", "20000"))
# Time to deliver everything: generous, as workers keep being killed meanwhile.
DELIVERY_S = 90 + EVENTS / 500

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(120 + 2 * DELIVERY_S),
]
WORKERS = 3


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    try:
        await wait_for_postgres(timeout_s=2)
    except OSError:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    async with fresh_database() as url:
        yield url


@pytest.fixture
async def receiver() -> AsyncIterator[CountingReceiver]:
    endpoint = CountingReceiver()
    await endpoint.start()
    try:
        yield endpoint
    finally:
        await endpoint.stop()


def _report(
    record_property: Callable[[str, object], None],
    receiver: CountingReceiver,
    workers: Workers,
) -> float:
    share = receiver.duplicates() / EVENTS
    record_property("duplicates", receiver.duplicates())
    record_property("duplicate_share", round(share, 5))
    record_property("workers_killed", workers.kills)
    print(
        f"\n{EVENTS} events, {workers.kills} workers killed: "
        f"{receiver.duplicates()} duplicates ({share:.2%})"
    )
    return share


async def _settled_rows(pg_url: str, timeout_s: float = 60.0) -> int:
    """Rows still not marked delivered once leases of killed workers ran out.

    A worker killed after its POST and before storing the answer leaves its rows
    pending; after the lease (3 s here) another worker sends them again and marks them.
    A worker restarted last may need several seconds to start on a loaded machine, so
    the wait is generous; it ends as soon as every row is marked.
    """
    deadline = time.monotonic() + timeout_s
    left = await pending_rows(pg_url)
    for _poll in range(int(timeout_s * 2)):
        if not left or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
        left = await pending_rows(pg_url)
    return left


async def test_every_event_arrives_while_workers_are_killed_at_random(
    pg_url: str,
    receiver: CountingReceiver,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    runtime = await Runtime.open(platform_settings(pg_url, tmp_path), deliver=False)
    workers = Workers(worker_env(pg_url, tmp_path), tmp_path)
    stop_killing = asyncio.Event()
    try:
        await install(runtime, receiver.endpoint.url)
        workers.start_all(WORKERS)
        killer = asyncio.create_task(
            workers.kill_and_restart_at_random(stop_killing, every_s=2.0, down_s=0.3)
        )
        events = open_events(EVENTS)
        await record_all(runtime, events)
        missing = await wait_until_delivered(
            receiver, [e.uuid for e in events], timeout_s=DELIVERY_S
        )
        stop_killing.set()
        await killer
        not_marked = await _settled_rows(pg_url)
        summary = await outbox_summary(pg_url) if not_marked else []
    finally:
        stop_killing.set()
        workers.stop_all()
        await runtime.close()

    _report(record_property, receiver, workers)
    assert missing == [], workers.logs()
    assert workers.kills >= 2
    assert not_marked == 0, summary


async def test_every_event_arrives_when_the_database_restarts_midway(
    pg_url: str,
    receiver: CountingReceiver,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    runtime = await Runtime.open(platform_settings(pg_url, tmp_path), deliver=False)
    workers = Workers(worker_env(pg_url, tmp_path), tmp_path)
    stop_killing = asyncio.Event()
    try:
        await install(runtime, receiver.endpoint.url)
        workers.start_all(WORKERS)
        killer = asyncio.create_task(
            workers.kill_and_restart_at_random(stop_killing, every_s=2.0, down_s=0.3)
        )
        events = open_events(EVENTS)
        recording = asyncio.create_task(record_all(runtime, events))
        await _when_received(receiver, EVENTS // 3, timeout_s=DELIVERY_S)
        await _restart_postgres()
        retries = await recording
        missing = await wait_until_delivered(
            receiver, [e.uuid for e in events], timeout_s=DELIVERY_S
        )
        stop_killing.set()
        await killer
    finally:
        stop_killing.set()
        workers.stop_all()
        await runtime.close()
        _ensure_postgres_runs()
        await wait_for_postgres()

    _report(record_property, receiver, workers)
    record_property("record_retries", retries)
    assert missing == [], workers.logs()


async def _when_received(
    receiver: CountingReceiver, count: int, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while len(receiver.counts) < count:
        assert time.monotonic() < deadline, f"{count} events not received in time"
        await asyncio.sleep(0.05)


async def _restart_postgres() -> None:
    version, name = postgres_cluster()
    process = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", "--skip-systemctl-redirect", version, name, "restart"
    )
    assert await process.wait() == 0
    await wait_for_postgres()


def _ensure_postgres_runs() -> None:
    version, name = postgres_cluster()
    state = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "status"],
        capture_output=True,
        check=False,
    )
    if state.returncode != 0:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"],
            check=False,
        )
