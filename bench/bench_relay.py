"""The relay end to end: activities in through the API, out to a receiver on loopback.

Three figures (issue 2): events per second end to end, latency from ingest to delivery
(p50, p99) at a fixed 1,000 events/s, and the peak memory of the service with a large
backlog waiting in the outbox next to its memory with an empty one.

The service runs as ``pegabridge serve`` in a child process on SQLite with
``synchronous=FULL``, the receiver in another; the load generator is this process. It
reads every answer to its end, so that its connections are kept alive and reused.
Latency counts from when an event was due to be sent (``latency_*``: to its arrival at
the receiver; ``ack_*``: to the 202), so a load that the sender or the service cannot
keep up with shows in the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    Receiver,
    bench_env,
    cli,
    cpu_seconds,
    free_port,
    peak_rss_mib,
    percentile,
    serving,
)


def _activity(event_uuid: str) -> dict[str, Any]:
    return {
        "uuid": event_uuid,
        "metric": "opens",
        "metric_timestamp": int(time.time()),
        "portal_id": 1746,
        "portal_name": "mokup",
        "brand_id": 1,
        "brand_name": "Mok-Up",
        "customer_id": 13,
        "email_address": "person@example.com",
        "broadcast_id": 719,
        "broadcast_type": "MAIL",
        "broadcast_event_type": "SINGLEMAIL",
        "broadcast_manual_options": {"InteractionId": "-563481321460449721"},
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/81.0",
        "os": "Windows",
        "browser": "Chrome",
    }


async def _setup(var_dir: Path, receiver_url: str) -> tuple[dict[str, str], str]:
    env = bench_env(var_dir)
    cli(env, "portal", "create", "--id", "1746", "--name", "mokup")
    cli(env, "brand", "create", "--portal", "1746", "--id", "1", "--name", "Mok-Up")
    key = cli(env, "apikey", "create", "--portal", "1746")
    cli(
        env,
        "install",
        "--portal",
        "1746",
        "--brand",
        "1",
        "--endpoint",
        receiver_url,
        "--username",
        "pega",
        "--password-stdin",
        "--activities",
        "opens",
        stdin="s3cret\n",
    )
    return env, key


async def _wait_arrivals(
    session: aiohttp.ClientSession, receiver: Receiver, uuids: list[str], limit_s: float
) -> dict[str, float]:
    deadline = time.monotonic() + limit_s
    while True:
        arrivals = await receiver.arrivals(session)
        if all(u in arrivals for u in uuids) or time.monotonic() > deadline:
            return arrivals
        await asyncio.sleep(0.25)


async def _throughput(
    session: aiohttp.ClientSession, url: str, key: str, receiver: Receiver, count: int
) -> dict[str, float]:
    uuids = [str(uuid.uuid4()) for _ in range(count)]
    batches = [uuids[i : i + 100] for i in range(0, count, 100)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    started = time.time()

    async def sender(mine: list[list[str]]) -> None:
        for batch in mine:
            body = json.dumps([_activity(u) for u in batch])
            async with session.post(url, data=body, headers=headers) as response:
                # Reading the answer to its end keeps the connection for the next
                # request; one left unread is closed and the next one reconnects.
                answer = await response.read()
                assert response.status == 202, answer

    await asyncio.gather(*(sender(batches[n::8]) for n in range(8)))
    ingested = time.time()
    arrivals = await _wait_arrivals(session, receiver, uuids, 600)
    if any(u not in arrivals for u in uuids):
        raise RuntimeError("events did not all arrive within 10 minutes")
    finished = max(arrivals[u] for u in uuids)
    return {
        "events": count,
        "ingest_events_per_s": round(count / (ingested - started)),
        "end_to_end_events_per_s": round(count / (finished - started)),
    }


async def _latency(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    receiver: Receiver,
    rate: int,
    seconds: float,
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # Each event's latency counts from the moment it was due to be sent, so a sender
    # that falls behind, or a request that waits for a free connection, counts
    # against the figure instead of hiding from it.
    due_at: dict[str, float] = {}
    acknowledged_ms: list[float] = []
    tasks = []

    async def one(event_uuid: str) -> None:
        async with session.post(
            url, data=json.dumps(_activity(event_uuid)), headers=headers
        ) as response:
            await response.read()
            assert response.status == 202
        acknowledged_ms.append((time.time() - due_at[event_uuid]) * 1000)

    start = time.perf_counter()
    wall_start = time.time()
    total = int(rate * seconds)
    for n in range(total):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        event_uuid = str(uuid.uuid4())
        due_at[event_uuid] = wall_start + n / rate
        tasks.append(asyncio.create_task(one(event_uuid)))
    issued = total / (time.perf_counter() - start)
    await asyncio.gather(*tasks)
    achieved = total / (time.perf_counter() - start)
    arrivals = await _wait_arrivals(session, receiver, list(due_at), 60)
    latencies = [(arrivals[u] - t) * 1000 for u, t in due_at.items() if u in arrivals]
    return {
        "offered_rate_per_s": rate,
        "issued_rate_per_s": round(issued),
        "achieved_rate_per_s": round(achieved),
        "ack_p50_ms": round(percentile(acknowledged_ms, 0.50), 2),
        "ack_p99_ms": round(percentile(acknowledged_ms, 0.99), 2),
        "latency_p50_ms": round(percentile(latencies, 0.50), 2),
        "latency_p99_ms": round(percentile(latencies, 0.99), 2),
        "lost": len(due_at) - len(latencies),
    }


def _service_side_latency(var_dir: Path) -> dict[str, float]:
    """Recording to the endpoint's answer, as the service logged it (last 5,000)."""
    with sqlite3.connect(var_dir / "pegabridge.db") as conn:
        rows = conn.execute(
            "SELECT (a.at - o.created_at) * 1000 FROM delivery_attempts a"
            " JOIN outbox o ON o.id = a.outbox_id ORDER BY a.id DESC LIMIT 5000"
        ).fetchall()
    values = [r[0] for r in rows]
    return {
        "service_p50_ms": round(percentile(values, 0.50), 2),
        "service_p99_ms": round(percentile(values, 0.99), 2),
    }


def _fill_backlog(database: Path, count: int) -> None:
    payload = json.dumps(_activity("00000000-0000-4000-8000-000000000000"))
    now = time.time()
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        rows = (
            (
                str(uuid.uuid4()),
                1746,
                1,
                1,
                "opens",
                n,
                13,
                payload,
                "pending",
                now,
                now,
            )
            for n in range(count)
        )
        conn.executemany(
            "INSERT INTO outbox (uuid, portal_id, brand_id, installation_id, metric,"
            " metric_id, customer_id, payload, state, created_at, next_attempt_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


async def run(
    count: int = 20_000,
    rate: int = 1000,
    seconds: float = 10.0,
    backlog: int = 1_000_000,
) -> dict[str, Any]:
    """Run the three measurements; returns their figures."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as folder, Receiver() as receiver:
        var_dir = Path(folder) / "var"
        env, key = await _setup(var_dir, receiver.url)
        port = free_port()
        url = f"http://127.0.0.1:{port}/api/v1/activities"
        connector = aiohttp.TCPConnector(limit=64)
        async with aiohttp.ClientSession(connector=connector) as session:
            with serving(env, port) as service:
                cpu_before = cpu_seconds(service.pid)
                results["throughput"] = await _throughput(
                    session, url, key, receiver, count
                )
                results["throughput"]["service_cpu_ms_per_event"] = round(
                    (cpu_seconds(service.pid) - cpu_before) * 1000 / count, 3
                )
                results["latency"] = await _latency(
                    session, url, key, receiver, rate, seconds
                )
                results["latency"].update(_service_side_latency(var_dir))
                results["memory"] = {
                    "peak_rss_mib_after_runs": round(peak_rss_mib(service.pid), 1)
                }

            if backlog:
                await receiver.control(session, failing="1")
                _fill_backlog(var_dir / "pegabridge.db", backlog)
                with serving(env, port) as service:
                    await asyncio.sleep(15)
                    results["memory"].update(
                        backlog_events=backlog,
                        peak_rss_mib_with_backlog=round(peak_rss_mib(service.pid), 1),
                    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    args = parser.parse_args()
    figures = asyncio.run(run(args.count, args.rate, args.seconds, args.backlog))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
