"""Pausing an installation or changing its password takes effect on every worker node.

Two ``pegabridge worker`` processes deliver for one installation; the test process
changes the installation in the database, as the web wizard of a third node would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from scaleout_harness import (
    CountingReceiver,
    Workers,
    fresh_database,
    install,
    open_events,
    platform_settings,
    record_all,
    wait_for_postgres,
    wait_until_delivered,
    worker_env,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.installs import service
from pegabridge.installs.service import InstallSettings
from pegabridge.web.runtime import Runtime

pytestmark = [pytest.mark.postgres, pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
async def cluster(
    tmp_path: Path,
) -> AsyncIterator[tuple[Runtime, Workers, CountingReceiver, int]]:
    """Two workers delivering for one installation, and a recording runtime."""
    try:
        await wait_for_postgres(timeout_s=2)
    except OSError:
        pytest.skip("PostgreSQL is not reachable at 127.0.0.1:5432")
    receiver = CountingReceiver()
    await receiver.start()
    async with fresh_database() as url:
        runtime = await Runtime.open(platform_settings(url, tmp_path), deliver=False)
        workers = Workers(worker_env(url, tmp_path), tmp_path)
        try:
            installation_id = await install(runtime, receiver.endpoint.url)
            workers.start_all(2)
            yield runtime, workers, receiver, installation_id
        finally:
            workers.stop_all()
            await runtime.close()
            await receiver.stop()


async def test_a_pause_stops_every_worker_and_new_credentials_reach_every_worker(
    cluster: tuple[Runtime, Workers, CountingReceiver, int],
) -> None:
    runtime, workers, receiver, installation_id = cluster
    before = open_events(1000)
    await record_all(runtime, before)
    assert await wait_until_delivered(receiver, [e.uuid for e in before], 30) == []

    await runtime.committer.run(
        lambda conn: service.pause(conn, installation_id, "operator")
    )
    await asyncio.sleep(1.0)  # every worker reloads its lanes within a poll
    during = open_events(1000)
    await record_all(runtime, during)
    await asyncio.sleep(2.0)
    sent_while_paused = [e.uuid for e in during if e.uuid in receiver.counts]

    receiver.endpoint.password = "n3w-s3cret"
    await runtime.committer.run(lambda conn: _new_password(conn, runtime))
    missing = await wait_until_delivered(receiver, [e.uuid for e in during], 30)

    assert sent_while_paused == []
    assert missing == [], workers.logs()
    assert receiver.refused == 0


async def _new_password(conn: AsyncConnection, runtime: Runtime) -> None:
    # A new password resumes an installation that was paused.
    await service.save_installation(
        conn,
        runtime.vault,
        1746,
        1,
        InstallSettings(password="n3w-s3cret"),
        activate=True,
    )
