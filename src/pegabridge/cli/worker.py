"""Commands for hosts that only deliver, and for purging old rows: worker, purge."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import time
from typing import Annotated

import typer
from sqlalchemy.exc import DBAPIError

from pegabridge import logs
from pegabridge.cli.common import console, fail, run
from pegabridge.config import Settings, get_settings
from pegabridge.delivery.housekeeping import (
    Housekeeper,
    Purged,
    purge_dead_batch,
)
from pegabridge.store.db import create_engine
from pegabridge.store.migrate import upgrade
from pegabridge.store.writer import GroupCommitter
from pegabridge.web.runtime import Runtime


def worker() -> None:
    """Deliver events, without a web server, until SIGTERM or Ctrl-C.

    Run as many as delivery needs, on any number of hosts, all pointed at the same
    PostgreSQL database (PEGABRIDGE_DATABASE_URL): they share the outbox, and the
    events of a worker that dies are taken over when its leases run out.
    """
    logs.configure()
    settings = get_settings()
    asyncio.run(_deliver_until_stopped(settings))


async def _deliver_until_stopped(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    runtime = await _open_retrying(settings, stop)
    if runtime is None:
        return
    console.print(f"pegabridge worker delivering (node {_node(runtime)})")
    try:
        await stop.wait()
    finally:
        await runtime.close()
    console.print("pegabridge worker stopped")


async def _open_retrying(settings: Settings, stop: asyncio.Event) -> Runtime | None:
    """Open the runtime, waiting for the database while it is down or starting up."""
    wait_s = 0.5
    while not stop.is_set():
        try:
            return await Runtime.open(settings, deliver=True)
        except (OSError, TimeoutError, DBAPIError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        console.print(f"database not reachable ({error[:160]}); retrying")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait_s)
        wait_s = min(wait_s * 2, 10.0)
    return None


def _node(runtime: Runtime) -> str:
    return runtime.delivery.node if runtime.delivery is not None else "-"


def purge(
    older_than_days: Annotated[
        float | None,
        typer.Option(help="Retention in days (default: PEGABRIDGE_RETENTION_S)."),
    ] = None,
    dead_letters: Annotated[
        bool,
        typer.Option(
            "--dead-letters", help="Purge dead letters instead (needs --before)."
        ),
    ] = False,
    before: Annotated[
        str | None,
        typer.Option(help="With --dead-letters: recorded before this ISO date."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Delete delivered events (and their attempt logs) older than the retention.

    With --dead-letters, delete dead letters recorded before --before instead; their
    payloads are gone for good, so they can no longer be replayed.
    """
    if dead_letters:
        _purge_dead(before, yes)
        return
    if before is not None:
        raise fail("--before goes with --dead-letters; use --older-than-days")

    settings = get_settings()
    if older_than_days is not None:
        if older_than_days <= 0:
            raise fail("--older-than-days must be more than 0")
        settings = settings.model_copy(update={"retention_s": older_than_days * 86400})
    purged = run(_purge_delivered(settings))
    console.print(
        f"purged {purged.events} delivered events and {purged.attempts} attempt "
        f"logs in {purged.batches} batches"
    )


async def _purge_delivered(settings: Settings) -> Purged:
    engine = create_engine(settings)
    try:
        await upgrade(engine)
        return await Housekeeper(GroupCommitter(engine), settings).purge_once()
    finally:
        await engine.dispose()


def _purge_dead(before: str | None, yes: bool) -> None:
    if before is None:
        raise fail("--dead-letters needs --before (an ISO date such as 2026-12-01)")
    try:
        before_ts = dt.datetime.fromisoformat(before).timestamp()
    except ValueError:
        raise fail(
            f"--before {before!r} is not an ISO date such as 2026-12-01"
        ) from None
    if before_ts > time.time():
        raise fail("--before lies in the future")
    if not yes:
        typer.confirm(
            f"Dead letters recorded before {before} will be deleted and can no "
            "longer be replayed. Go on?",
            abort=True,
        )

    total = run(_purge_dead_before(get_settings(), before_ts))
    console.print(f"purged {total} dead letters")


async def _purge_dead_before(settings: Settings, before_ts: float) -> int:
    engine = create_engine(settings)
    total = 0
    try:
        await upgrade(engine)
        while True:
            async with engine.begin() as conn:
                events, _attempts = await purge_dead_batch(
                    conn, settings.purge_batch, before=before_ts
                )
            if events == 0:
                return total
            total += events
    finally:
        await engine.dispose()
