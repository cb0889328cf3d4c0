"""Scale-out on a shared database: notifications, sequences across processes, purging.

Notifications exist on PostgreSQL only; sequences and housekeeping run on both
databases.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.config import Settings
from pegabridge.delivery import outbox
from pegabridge.delivery.housekeeping import Housekeeper, purge_dead_batch
from pegabridge.delivery.outbox import Outcome
from pegabridge.events.metrics import Activity
from pegabridge.events.models import OpenEvent
from pegabridge.installs import service
from pegabridge.installs.service import InstallSettings
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.store.tables import delivery_attempts
from pegabridge.store.tables import outbox as outbox_table
from pegabridge.web.runtime import Runtime

PORTAL, BRAND = 1746, 1
PEGABRIDGE = str(Path(sys.executable).with_name("pegabridge"))


def _activity(metric_id: int | None = None) -> dict[str, object]:
    activity: dict[str, object] = {
        "uuid": str(uuid.uuid4()),
        "metric": "opens",
        "metric_timestamp": int(time.time()),
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
    if metric_id is not None:
        activity["metric_id"] = metric_id
    return activity


def _events(count: int) -> list[OpenEvent]:
    return [OpenEvent.model_validate(_activity()) for _ in range(count)]


async def _install(runtime: Runtime, endpoint_url: str) -> int:
    async def act(conn: AsyncConnection) -> int:
        await service.create_portal(conn, PORTAL, "mokup")
        await service.create_brand(conn, PORTAL, BRAND, "Mok-Up")
        values = InstallSettings(
            endpoint_url=endpoint_url,
            username="pega",
            password="s3cret",
            activities=frozenset(Activity),
        )
        installation = await service.save_installation(
            conn, runtime.vault, PORTAL, BRAND, values, activate=True
        )
        return installation.id

    return await runtime.committer.run(act)


@pytest.fixture
def pg_settings(settings: Settings) -> Settings:
    if not settings.resolved_database_url().startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    # Polling so slow that only a notification explains a quick delivery.
    return settings.model_copy(update={"poll_interval_s": 30.0})


@pytest.fixture
async def two_nodes(
    pg_settings: Settings, sandbox: SandboxEndpoint
) -> AsyncIterator[tuple[Runtime, Runtime]]:
    """A node that only records, and a node that only delivers, on one database."""
    recording = await Runtime.open(pg_settings, deliver=False)
    delivering = await Runtime.open(pg_settings, deliver=True)
    try:
        await _install(recording, sandbox.url)
        assert delivering.delivery is not None
        delivering.delivery.wake()
        assert delivering.delivery.listener is not None
        await asyncio.wait_for(delivering.delivery.listener.connected.wait(), 5)
        yield recording, delivering
    finally:
        await delivering.close()
        await recording.close()


@pytest.mark.postgres
async def test_an_event_recorded_on_one_node_is_sent_by_another_before_any_poll(
    two_nodes: tuple[Runtime, Runtime], sandbox: SandboxEndpoint
) -> None:
    recording, _delivering = two_nodes
    await asyncio.sleep(0.3)  # the delivering node has loaded its lane

    started = time.perf_counter()
    await recording.recorder.record(_events(1))
    await sandbox.wait_for(1, timeout_s=5)
    latency_s = time.perf_counter() - started

    # The delivering node polls every 30 s: only the notification explains this.
    assert latency_s < 5.0


@pytest.mark.postgres
async def test_the_listener_reconnects_after_its_connection_is_killed(
    two_nodes: tuple[Runtime, Runtime], pg_settings: Settings, sandbox: SandboxEndpoint
) -> None:
    recording, delivering = two_nodes
    assert delivering.delivery is not None and delivering.delivery.listener is not None
    listener = delivering.delivery.listener

    await _terminate_listening_backends(pg_settings.resolved_database_url())
    for _ in range(200):
        if listener.connections >= 2:
            break
        await asyncio.sleep(0.05)
    await asyncio.wait_for(listener.connected.wait(), 5)
    started = time.perf_counter()
    await recording.recorder.record(_events(1))
    await sandbox.wait_for(1, timeout_s=5)

    assert listener.connections == 2
    assert time.perf_counter() - started < 5.0  # long before the 30 s poll


async def _terminate_listening_backends(database_url: str) -> None:
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        killed = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
    finally:
        await conn.close()
    assert killed == 1


def test_metric_ids_stay_unique_when_several_processes_record_at_once(
    settings: Settings, tmp_path: Path
) -> None:
    files = []
    for n in range(4):
        path = tmp_path / f"activities-{n}.ndjson"
        path.write_text("\n".join(json.dumps(_activity()) for _ in range(150)))
        files.append(path)
    env = dict(
        os.environ,
        PEGABRIDGE_DATABASE_URL=settings.resolved_database_url(),
        PEGABRIDGE_SECRET_KEY="test-secret-key",
        PEGABRIDGE_VAR_DIR=str(tmp_path / "var"),
    )
    subprocess.run([PEGABRIDGE, "migrate"], env=env, check=True, capture_output=True)

    processes = [
        subprocess.Popen(
            [PEGABRIDGE, "ingest", str(path), "--batch", "15"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for path in files
    ]
    errors = [p.communicate(timeout=90)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    ids = asyncio.run(_metric_ids(settings))

    assert len(ids) == 600
    assert len(set(ids)) == 600


async def _metric_ids(settings: Settings) -> list[int]:
    runtime = await Runtime.open(settings, deliver=False)
    try:
        async with runtime.db.connect() as conn:
            rows = await conn.execute(select(outbox_table.c.metric_id))
            return [row.metric_id for row in rows]
    finally:
        await runtime.close()


# --- Housekeeping. ---


@pytest.fixture
async def recorded(settings: Settings) -> AsyncIterator[tuple[Runtime, list[str]]]:
    """A runtime without workers and 30 recorded events of an installation."""
    runtime = await Runtime.open(settings, deliver=False)
    try:
        await _install(runtime, "http://127.0.0.1:9/events")
        events = _events(30)
        await runtime.recorder.record(events)
        yield runtime, [e.uuid for e in events]
    finally:
        await runtime.close()


async def _settle(runtime: Runtime, uuids: list[str], kind: str, at: float) -> None:
    """Make events delivered or dead at ``at``, as a worker would, attempts logged."""
    status = 200 if kind == "delivered" else 503
    outcomes = [Outcome(u, 1, 1, at, 1.0, status, kind) for u in uuids]

    async def act(conn: AsyncConnection) -> None:
        await conn.execute(
            update(outbox_table)
            .where(outbox_table.c.uuid.in_(uuids))
            .values(leased_by="test-node", created_at=at)
        )
        await outbox.persist_outcomes(conn, "test-node", outcomes)

    await runtime.committer.run(act)


async def _count(runtime: Runtime, state: str) -> int:
    async with runtime.db.connect() as conn:
        statement = select(func.count()).where(outbox_table.c.state == state)
        return int(await conn.scalar(statement) or 0)


async def _attempt_logs(runtime: Runtime) -> int:
    async with runtime.db.connect() as conn:
        statement = select(func.count()).select_from(delivery_attempts)
        return int(await conn.scalar(statement) or 0)


async def test_purge_deletes_old_deliveries_and_their_attempts_in_batches(
    recorded: tuple[Runtime, list[str]], settings: Settings
) -> None:
    runtime, uuids = recorded
    long_ago = time.time() - 30 * 86400
    await _settle(runtime, uuids[:20], "delivered", long_ago)
    await _settle(runtime, uuids[20:25], "delivered", time.time())
    keeper = Housekeeper(
        runtime.committer,
        settings.model_copy(update={"retention_s": 7 * 86400, "purge_batch": 6}),
    )

    purged = await keeper.purge_once()

    assert (purged.events, purged.attempts, purged.batches) == (20, 20, 4)
    assert await _count(runtime, "delivered") == 5
    assert await _attempt_logs(runtime) == 5


async def test_purge_keeps_dead_letters_however_old(
    recorded: tuple[Runtime, list[str]], settings: Settings
) -> None:
    runtime, uuids = recorded
    long_ago = time.time() - 30 * 86400
    await _settle(runtime, uuids[:10], "dead", long_ago)
    keeper = Housekeeper(
        runtime.committer, settings.model_copy(update={"retention_s": 1})
    )

    purged = await keeper.purge_once()

    assert purged.events == 0
    assert await _count(runtime, "dead") == 10


async def test_dead_letters_are_purged_only_when_asked_and_only_those_before_the_date(
    recorded: tuple[Runtime, list[str]],
) -> None:
    runtime, uuids = recorded
    await _settle(runtime, uuids[:10], "dead", time.time() - 30 * 86400)
    await _settle(runtime, uuids[10:15], "dead", time.time())

    events, attempts = await runtime.committer.run(
        lambda conn: purge_dead_batch(conn, 100, before=time.time() - 86400)
    )

    assert (events, attempts) == (10, 10)
    assert await _count(runtime, "dead") == 5
