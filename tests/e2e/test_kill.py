"""``pegabridge serve`` as a child process: SIGKILLed, none lost; dead letters replayed.

The first test kills the service while events are handed in and while they are sent;
every acknowledged event must still arrive. The second lets events die against an
endpoint that is down and brings them back with ``pegabridge dead-letters replay``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pegabridge.config import Settings
from pegabridge.events.metrics import Activity
from pegabridge.installs import service
from pegabridge.sandbox import Received, SandboxEndpoint
from pegabridge.web.runtime import Runtime

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
PEGABRIDGE = REPO / ".venv" / "bin" / "pegabridge"
if not PEGABRIDGE.exists():
    PEGABRIDGE = Path(sys.executable).with_name("pegabridge")
EVENTS = 2_000
BATCH = 50
# Short waits so that the test takes seconds: a killed process's leases run out
# after LEASE_S, a failing endpoint is probed again after a fraction of a second.
FAST = {
    "PEGABRIDGE_LEASE_S": "2",
    "PEGABRIDGE_POLL_INTERVAL_S": "0.1",
    "PEGABRIDGE_RETRY_BASE_S": "0.05",
    "PEGABRIDGE_RETRY_MAX_DELAY_S": "0.5",
    "PEGABRIDGE_CIRCUIT_PROBE_S": "0.2",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``pegabridge serve`` as a child process that can be killed and started again."""

    def __init__(self, var_dir: Path, **extra_env: str) -> None:
        self.var_dir = var_dir
        self.extra_env = extra_env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: asyncio.subprocess.Process | None = None
        self.log = var_dir.parent / "serve.log"
        self.up = asyncio.Event()

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PEGABRIDGE_")}
        env.update(FAST, **self.extra_env, PEGABRIDGE_VAR_DIR=str(self.var_dir))
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                str(PEGABRIDGE), "serve", "--port", str(self.port),
                stdout=log, stderr=log, env=env,
            )  # fmt: skip
        await self._wait_ready()
        self.up.set()

    async def _wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            for _ in range(int(timeout_s * 10)):
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/readyz")).status_code == 200:
                        return
                assert self.process is not None and self.process.returncode is None, (
                    self.log.read_text()[-2000:]
                )
                assert time.monotonic() < deadline, "serve did not get ready"
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        self.up.clear()
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            await self.kill()


async def install(var_dir: Path, endpoint: str) -> str:
    """Portal 1746, brand 1, the app towards ``endpoint``; the portal's API key."""
    runtime = await Runtime.open(Settings(var_dir=var_dir), deliver=False)

    async def setup(conn: Any) -> str:
        await service.create_portal(conn, 1746, "mokup")
        await service.create_brand(conn, 1746, 1, "Mok-Up")
        values = service.InstallSettings(
            endpoint_url=endpoint,
            username="pega",
            password="s3cret",
            activities=frozenset(Activity),
        )
        await service.save_installation(
            conn, runtime.vault, 1746, 1, values, activate=True
        )
        return await service.create_api_key(conn, 1746)

    try:
        return await runtime.committer.run(setup)
    finally:
        await runtime.close()


def batches() -> list[list[dict[str, Any]]]:
    """The activities to hand in, each with the uuid its sender gave it."""
    events = [
        {
            "uuid": str(uuid.uuid4()),
            "metric": "opens",
            "metric_timestamp": 1589801661,
            "portal_id": 1746,
            "brand_id": 1,
            "customer_id": n,
        }
        for n in range(EVENTS)
    ]
    return [events[i : i + BATCH] for i in range(0, EVENTS, BATCH)]


async def hand_in(server: Server, key: str, acknowledged: set[str]) -> None:
    """Hand in every batch; a batch whose answer was lost is sent again, same uuids."""
    headers = {"Authorization": f"Bearer {key}"}
    for batch in batches():
        while True:
            await server.up.wait()
            try:
                async with httpx.AsyncClient(base_url=server.base_url) as client:
                    answer = await client.post(
                        "/api/v1/activities", json=batch, headers=headers, timeout=30
                    )
            except httpx.TransportError:
                await asyncio.sleep(0.05)
                continue
            assert answer.status_code == 202, answer.text
            acknowledged.update(item["uuid"] for item in answer.json()["items"])
            break


async def until_accepted(sandbox: SandboxEndpoint, count: int) -> None:
    while len(sandbox.accepted()) < count:  # noqa: ASYNC110 - counting a receiver
        await asyncio.sleep(0.02)


async def until_all_arrived(sandbox: SandboxEndpoint, uuids: set[str]) -> None:
    while uuids - set(arrived(sandbox.accepted())):  # noqa: ASYNC110
        await asyncio.sleep(0.2)


def arrived(received: list[Received]) -> Counter[str]:
    return Counter(str(r.json()["uuid"]) for r in received)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(tmp_path / "var")
    try:
        yield server
    finally:
        await server.stop()


async def test_no_acknowledged_event_is_lost_when_serve_is_killed_twice(
    server: Server, sandbox: SandboxEndpoint
) -> None:
    key = await install(server.var_dir, sandbox.url)
    sandbox.responder = lambda _request: (503, "Pega is down")
    acknowledged: set[str] = set()
    await server.start()

    # First kill: while activities are handed in and the endpoint is down.
    feeding = asyncio.create_task(hand_in(server, key, acknowledged))
    await asyncio.sleep(random.uniform(0.2, 1.5))
    await server.kill()
    await server.start()
    await feeding

    # Second kill: while the backlog flows to the endpoint, which is back.
    sandbox.responder = None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(until_accepted(sandbox, random.randint(1, 1500)), 60)
    await server.kill()
    await server.start()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(until_all_arrived(sandbox, acknowledged), 180)

    delivered = arrived(sandbox.accepted())
    duplicates = sum(n - 1 for n in delivered.values())
    print(f"kill test: {len(delivered)} delivered, {duplicates} duplicates")
    assert len(acknowledged) == EVENTS
    assert sorted(acknowledged - set(delivered)) == []


async def cli(var_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEGABRIDGE_")}
    env.update(PEGABRIDGE_VAR_DIR=str(var_dir), COLUMNS="200")
    process = await asyncio.create_subprocess_exec(
        str(PEGABRIDGE), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    return output.decode()


async def test_dead_letters_are_listed_and_replayed_with_their_uuid(
    tmp_path: Path, sandbox: SandboxEndpoint
) -> None:
    server = Server(tmp_path / "var", PEGABRIDGE_RETRY_MAX_AGE_S="0.5")
    await install(server.var_dir, sandbox.url)
    sandbox.responder = lambda _request: (503, "Pega is down")
    batch = batches()[0][:1]
    (tmp_path / "one.json").write_text(json.dumps(batch))
    await server.start()
    try:
        await cli(server.var_dir, "ingest", str(tmp_path / "one.json"))
        for _ in range(300):
            listed = await cli(server.var_dir, "dead-letters", "list")
            if batch[0]["uuid"] in listed:
                break
            await asyncio.sleep(0.2)

        sandbox.responder = None
        await cli(server.var_dir, "dead-letters", "replay")
        [received] = await sandbox.wait_for(1, timeout_s=30)
    finally:
        await server.stop()

    assert batch[0]["uuid"] in listed
    assert received.json()["uuid"] == batch[0]["uuid"]
