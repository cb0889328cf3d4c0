"""Benchmark of mailing: a bulk send to many customers into a local SMTP sink.

`run()` returns a dict of figures; `python bench/bench_mailing.py [count]` prints it.
The sink is aiosmtpd in a child process (so it does not share our CPU time slice); it
accepts and drops every message. Each email is rendered for one customer (Jinja2,
links rewritten to signed tracked links, open pixel, headers), sent over reused SMTP
connections, and recorded (a broadcasts row and a `broadcasts` event in the outbox, on
SQLite). Memory is the process's resident size sampled during the send.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port
from pegabridge.config import Settings
from pegabridge.installs import service as installs
from pegabridge.mailing.contents import ContentInput, create_content
from pegabridge.mailing.sends import SendSpec
from pegabridge.mailing.service import Mailing
from pegabridge.mailing.settings import MailSettings
from pegabridge.store.tables import customers
from pegabridge.web.runtime import Runtime

PORTAL_ID, BRAND_ID = 7, 1

SINK = """
import asyncio, sys
from aiosmtpd.controller import Controller

class Drop:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Drop.count += 1
        return "250 OK"

controller = Controller(Drop(), hostname="127.0.0.1", port=int(sys.argv[1]))
controller.start()
print(sys.argv[1], flush=True)
sys.stdin.read()
controller.stop()
"""

HTML = """<html><head><meta name="InteractionId" content="{{ InteractionId }}"></head>
<body><h1>Hello {{ customer.first_name }}</h1>
<p>Your offer {{ UniqueOfferId }} is waiting in {{ customer.fields.city }}.</p>
<a href="https://shop.example/offer?id={{ UniqueOfferId }}" data-pb-tags="offer">See</a>
<a href="https://shop.example/stores">Stores</a>
<a href="{{ unsubscribe_url }}">Unsubscribe</a>
</body></html>
"""


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _seed(runtime: Runtime, count: int) -> int:
    async def brand(conn: Any) -> int:
        await installs.create_portal(conn, PORTAL_ID, "Bench portal")
        await installs.create_brand(conn, PORTAL_ID, BRAND_ID, "Bench brand")
        content = await create_content(
            conn,
            PORTAL_ID,
            BRAND_ID,
            ContentInput(
                name="Bench offer",
                subject="An offer for {{ customer.first_name }}",
                html=HTML,
                text="Hello {{ customer.first_name }}: https://shop.example/offer\n",
                variables={"UniqueOfferId": "OF-1", "InteractionId": "-1"},
            ),
        )
        return content.id

    content_id = await runtime.committer.run(brand)
    now = time.time()
    for start in range(0, count, 5000):
        rows = [
            {
                "portal_id": PORTAL_ID,
                "brand_id": BRAND_ID,
                "email": f"customer{i}@example.org",
                "first_name": f"Name{i}",
                "fields": json.dumps({"city": "Oslo"}),
                "created_at": now,
                "updated_at": now,
            }
            for i in range(start, min(count, start + 5000))
        ]
        await runtime.committer.run(
            lambda c, rows=rows: c.execute(customers.insert(), rows)
        )
    return content_id


def _start_sink() -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, "-c", SINK, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    sink.stdout.readline()
    return sink, port


def _stop_sink(sink: subprocess.Popen[str]) -> None:
    assert sink.stdin is not None
    sink.stdin.close()
    sink.wait(timeout=10)


async def run(count: int = 100_000, connections: int = 8) -> dict[str, Any]:
    """Send to ``count`` customers; emails/s, and memory during the send."""
    sink, port = await asyncio.to_thread(_start_sink)
    try:
        with tempfile.TemporaryDirectory() as folder:
            return await _run(Path(folder), port, count, connections)
    finally:
        await asyncio.to_thread(_stop_sink, sink)


async def _run(folder: Path, port: int, count: int, connections: int) -> dict[str, Any]:
    settings = Settings(
        var_dir=folder,
        secret_key="bench-secret",
        sqlite_synchronous="NORMAL",
    )
    runtime = await Runtime.open(settings, deliver=False)
    mail = MailSettings(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_connections=connections,
        mail_from="Bench <news@shop.example>",
        return_path_domain="return.shop.example",
    )
    try:
        content_id = await _seed(runtime, count)
        parts = Mailing.assemble(
            settings,
            runtime.db,
            runtime.committer,
            runtime.vault,
            runtime.recorder,
            mail_settings=mail,
        )
        send_id = await parts.sender.create_send(
            SendSpec(
                PORTAL_ID,
                BRAND_ID,
                "QUICKMAIL",
                content_id,
                manual_options={"UniqueOfferId": "OF-9", "InteractionId": "-5634"},
            )
        )
        samples: list[float] = []

        async def sample() -> None:
            while True:
                samples.append(_rss_mib())
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample())
        rss_before = _rss_mib()
        started = time.perf_counter()
        summary = await parts.sender.run_send(send_id)
        elapsed = time.perf_counter() - started
        sampler.cancel()
        await parts.close()
    finally:
        await runtime.close()

    tenth = samples[max(0, len(samples) // 10)] if samples else rss_before
    return {
        "customers": count,
        "sent": summary.report.sent,
        "seconds": round(elapsed, 2),
        "emails_per_s": round(summary.report.sent / elapsed, 1),
        "smtp_connections": connections,
        "rss_before_send_mib": round(rss_before, 1),
        "rss_at_10pct_mib": round(tenth, 1),
        "rss_peak_during_send_mib": round(max(samples or [rss_before]), 1),
    }


if __name__ == "__main__":
    wanted = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(json.dumps(asyncio.run(run(wanted)), indent=2))
