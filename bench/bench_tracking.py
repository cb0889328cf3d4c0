"""Benchmark of the tracking endpoints: open pixel and click redirects over real HTTP.

`pegabridge serve` runs in a child process on the embedded SQLite default (WAL,
`synchronous=FULL` unless BENCH_SQLITE_SYNCHRONOUS says otherwise) with its delivery
workers POSTing every event to the benchmark receiver. Emails are seeded straight into
its database; a client in this process then hits pixel and redirect URLs with
keep-alive connections and a mix of real user agents. Every answered hit has its
event committed in the outbox before the answer; the run checks the counts.

`run()` returns hits per second and latency percentiles (client side, ms) per phase;
`python bench/bench_tracking.py` prints them as JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    Receiver,
    bench_env,
    cli,
    free_port,
    peak_rss_mib,
    percentile,
    serving,
)
from pegabridge.installs.vault import Vault
from pegabridge.tracking.urls import TrackingUrls, key_ring_for

PORTAL, BRAND = 1746, 1
SERVE_ARGS: tuple[str, ...] = ()
RELAY_LIST = (
    Path(os.environ.get("PEGABRIDGE_SHARED_DATA_DIR", "/work/shared/data"))
    / "apple-private-relay-ipv4-ranges.txt"
)
AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko)",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17029; Pro)",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
    "(via ggpht.com GoogleImageProxy)",
    "Mozilla/5.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Barracuda Sentinel (EE)",
)


def _seed(database: Path, emails: int) -> list[tuple[int, list[int]]]:
    """Insert `emails` sent broadcasts with three links each; their ids."""
    now = time.time()
    seeded: list[tuple[int, list[int]]] = []
    with sqlite3.connect(database) as db:
        content = db.execute(
            "INSERT INTO contents (portal_id, brand_id, name, subject, created_at,"
            " updated_at) VALUES (?, ?, 'Bench', 'Hello', ?, ?)",
            (PORTAL, BRAND, now, now),
        ).lastrowid
        link_ids = [
            db.execute(
                "INSERT INTO links (portal_id, content_id, kind, url, alt, tags, utm,"
                " created_at) VALUES (?, ?, 'click', ?, 'alt', '[\"a\"]', '{}', ?)",
                (PORTAL, content, f"https://shop.example.com/p/{n}?utm_source=x", now),
            ).lastrowid
            for n in range(3)
        ]
        for index in range(emails):
            customer = db.execute(
                "INSERT INTO customers (portal_id, brand_id, email, bounce_count_soft,"
                " created_at, updated_at) VALUES (?, ?, ?, 1, ?, ?)",
                (PORTAL, BRAND, f"c{index}@example.com", now, now),
            ).lastrowid
            context = {
                "portal_id": PORTAL,
                "brand_id": BRAND,
                "customer_id": customer,
                "email_address": f"c{index}@example.com",
                "subject": "Hello",
                "broadcast_type": "MAIL",
                "broadcast_event_type": "SINGLEMAIL",
                "sub_type": "SINGLEMAIL",
                "broadcast_timestamp": int(now - 3600),
            }
            broadcast = db.execute(
                "INSERT INTO broadcasts (portal_id, brand_id, send_id, customer_id,"
                " content_id, email_address, state, sent_at, context, created_at)"
                " VALUES (?, ?, 1, ?, ?, ?, 'sent', ?, ?, ?)",
                (
                    PORTAL,
                    BRAND,
                    customer,
                    content,
                    f"c{index}@example.com",
                    now - 3600,
                    json.dumps(context),
                    now,
                ),
            ).lastrowid
            assert broadcast is not None
            seeded.append((broadcast, [int(i) for i in link_ids if i is not None]))
    return seeded


async def _hammer(
    session: aiohttp.ClientSession, urls: list[str], concurrency: int, expect: int
) -> dict[str, float]:
    """Request every URL with `concurrency` clients; rate and latency figures."""
    latencies: list[float] = []
    failures = 0
    queue = iter(enumerate(urls))

    async def client() -> None:
        nonlocal failures
        for index, url in queue:
            agent = AGENTS[index % len(AGENTS)]
            started = time.perf_counter()
            async with session.get(
                url, headers={"User-Agent": agent}, allow_redirects=False
            ) as response:
                await response.read()
                if response.status != expect:
                    failures += 1
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed_s = time.perf_counter() - started
    return {
        "requests": len(urls),
        "failures": failures,
        "hits_per_s": round(len(urls) / elapsed_s),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
    }


def _outbox_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT metric, COUNT(*) FROM outbox GROUP BY metric")
        counts = {metric: int(count) for metric, count in rows}
        counts["tracking_hits"] = int(
            db.execute("SELECT COUNT(*) FROM tracking_hits").fetchone()[0]
        )
    return counts


async def run(
    count: int = 20_000, concurrency: int = 32, emails: int = 2000
) -> dict[str, Any]:
    """Serve, seed, then measure `count` pixel hits and `count` redirects."""
    results: dict[str, Any] = {"count": count, "concurrency": concurrency}
    with tempfile.TemporaryDirectory() as folder, Receiver() as receiver:
        var_dir = Path(folder) / "var"
        overrides = {}
        if RELAY_LIST.is_file():
            overrides["PEGABRIDGE_APPLE_RELAY_RANGES"] = str(RELAY_LIST)
        env = bench_env(var_dir, **overrides)
        _install(env, receiver.url)
        database = var_dir / "pegabridge.db"
        seeded = _seed(database, emails)

        port = free_port()
        ring = key_ring_for("", Vault(b"bench-secret").derive(b"tracking"))
        urls = TrackingUrls(f"http://127.0.0.1:{port}", ring)
        rng = random.Random(7)
        picks = [rng.choice(seeded) for _ in range(count)]
        pixels = [urls.open_url(PORTAL, broadcast) for broadcast, _ in picks]
        clicks = [
            urls.click_url(PORTAL, broadcast, rng.choice(link_ids))
            for broadcast, link_ids in picks
        ]

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            with serving(env, port, *SERVE_ARGS) as service:
                health = [f"http://127.0.0.1:{port}/healthz"] * min(count, 5000)
                results["baseline_healthz"] = await _hammer(
                    session, health, concurrency, 200
                )
                await _hammer(session, pixels[:500], concurrency, 200)  # warm up
                results["pixel"] = await _hammer(session, pixels, concurrency, 200)
                results["redirect"] = await _hammer(session, clicks, concurrency, 302)
                results["peak_rss_mib"] = round(peak_rss_mib(service.pid), 1)

        results["recorded"] = _outbox_counts(database)
    return results


def _install(env: dict[str, str], receiver_url: str) -> None:
    cli(env, "portal", "create", "--id", str(PORTAL), "--name", "mokup")
    cli(env, "brand", "create", "--portal", str(PORTAL), "--id", "1", "--name", "Mok")
    cli(
        env,
        "install",
        "--portal",
        str(PORTAL),
        "--brand",
        str(BRAND),
        "--endpoint",
        receiver_url,
        "--username",
        "pega",
        "--password-stdin",
        "--activities",
        "opens,clicks",
        stdin="s3cret\n",
    )


def main() -> None:
    print(json.dumps(asyncio.run(run()), indent=2))


if __name__ == "__main__":
    main()
