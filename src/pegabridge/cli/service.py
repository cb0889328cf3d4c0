"""Commands that run pegabridge or move events: serve, ingest, dead letters, sandbox."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge import logs, ops
from pegabridge.cli.common import console, fail, in_transaction, run
from pegabridge.config import get_settings
from pegabridge.delivery.recorder import Submitted
from pegabridge.events.ingest import (
    ActivityRefused,
    BodyError,
    accept_activity,
    parse_body,
)
from pegabridge.events.schema import write_schemas
from pegabridge.installs.vault import Vault
from pegabridge.store.db import create_engine
from pegabridge.store.tables import outbox as outbox_table
from pegabridge.web.runtime import Runtime

dead_app = typer.Typer(
    help="Events that could not be delivered within the retry window."
)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    deliver: Annotated[
        bool, typer.Option(help="Also run the delivery workers in this process.")
    ] = True,
) -> None:
    """Run the web server and the delivery workers (migrating the database first)."""
    import uvicorn

    from pegabridge.web.app import create_app

    logs.configure()
    listener = _listen(host, port)
    settings = get_settings()
    if "PEGABRIDGE_PUBLIC_BASE_URL" not in os.environ:
        # Links printed and mailed should point at where this server really listens.
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        settings = settings.model_copy(
            update={"public_base_url": f"http://{shown}:{port}"}
        )
    console.print(
        f"pegabridge on http://{host}:{port}  (database: "
        f"{_safe_url(settings.resolved_database_url())})",
        soft_wrap=True,
        highlight=False,
    )
    uvicorn.run(
        create_app(settings, deliver=deliver),
        fd=listener.fileno(),
        log_config=None,
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, opened before anything starts (or prints a setup link)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        raise fail(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; is another "
            "pegabridge running there? Choose another --port."
        ) from None
    listener.set_inheritable(True)
    return listener


def _safe_url(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def migrate() -> None:
    """Bring the database schema up to date."""
    run(in_transaction(lambda _conn, _vault: asyncio.sleep(0)))
    console.print("database is up to date")


def schema(
    out: Annotated[Path, typer.Option(help="Folder for the schema files.")] = Path(
        "docs/schema"
    ),
) -> None:
    """Write the JSON Schema file of each metric."""
    for path in write_schemas(out):
        console.print(str(path))


def ingest(
    file: Annotated[
        Path, typer.Argument(help="A JSON object, a JSON array or NDJSON.")
    ],
    batch: Annotated[int, typer.Option(help="Activities per transaction.")] = 1000,
) -> None:
    """Record the activities of a file; a running `serve` delivers them.

    The whole file is checked first: when any activity is refused, every refused line is
    listed and nothing is recorded.
    """
    if not file.exists():
        raise fail(f"{file} does not exist")
    items = _read_items(file)
    accepted, refused = _check_items(items)
    if refused:
        for index, message in refused[:50]:
            console.print(f"activity {index + 1}: {message}")
        raise fail(
            f"{len(refused)} of {len(items)} activities refused; nothing recorded"
        )

    counts = run(_record_all(accepted, batch))
    console.print(f"recorded {len(accepted)} activities: {json.dumps(counts)}")


def _read_items(file: Path) -> list[Any]:
    # The same reading as the ingest API: one object (pretty-printed or not), an
    # array, or NDJSON lines.
    try:
        return parse_body(file.read_bytes())
    except OSError as exc:
        raise fail(f"{file} cannot be read: {exc.strerror or exc}") from None
    except BodyError as exc:
        raise fail(f"{file} is not a JSON object, array or NDJSON: {exc}") from None


def _check_items(items: list[Any]) -> tuple[list[Submitted], list[tuple[int, str]]]:
    accepted, refused = [], []
    for index, item in enumerate(items):
        try:
            ok = accept_activity(item, None)
        except (ActivityRefused, BodyError) as exc:
            refused.append((index, str(exc)))
            continue
        accepted.append(Submitted(ok.event, ok.has_metric_id))
    return accepted, refused


async def _record_all(accepted: list[Submitted], batch: int) -> dict[str, int]:
    runtime = await Runtime.open(get_settings(), deliver=False)
    totals: dict[str, int] = {}
    try:
        with _progress() as progress:
            task = progress.add_task("recording", total=len(accepted))
            for start in range(0, len(accepted), batch):
                chunk = accepted[start : start + batch]
                result = await runtime.recorder.record(chunk)
                for state, count in result.count().items():
                    totals[state] = totals.get(state, 0) + count
                progress.advance(task, len(chunk))
    finally:
        await runtime.close()
    return totals


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
        console=console,
    )


@dead_app.command("list")
def dead_list(
    limit: Annotated[int, typer.Option(help="At most this many.")] = 50,
) -> None:
    """The newest dead letters with their last error."""

    async def query(conn: AsyncConnection, _vault: Vault) -> list[Any]:
        rows = await conn.execute(
            select(
                outbox_table.c.uuid,
                outbox_table.c.portal_id,
                outbox_table.c.brand_id,
                outbox_table.c.metric,
                outbox_table.c.attempts,
                outbox_table.c.created_at,
                outbox_table.c.last_status,
                outbox_table.c.last_error,
            )
            .where(outbox_table.c.state == "dead")
            .order_by(outbox_table.c.id.desc())
            .limit(limit)
        )
        return list(rows)

    rows = run(in_transaction(query))
    table = Table(title=f"dead letters (newest {limit})")
    for column in (
        "uuid",
        "portal",
        "brand",
        "metric",
        "attempts",
        "recorded",
        "last status",
        "last error",
    ):
        table.add_column(column)
    for r in rows:
        recorded = dt.datetime.fromtimestamp(r.created_at).isoformat(timespec="seconds")
        table.add_row(
            r.uuid,
            str(r.portal_id),
            str(r.brand_id),
            r.metric,
            str(r.attempts),
            recorded,
            str(r.last_status or "-"),
            r.last_error[:60],
        )
    console.print(table)


@dead_app.command("replay")
def dead_replay(
    uuid: Annotated[list[str] | None, typer.Option(help="Only these uuids.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only those recorded since (ISO date/time).")
    ] = None,
) -> None:
    """Send dead letters again, with their original payload and uuid."""
    since_ts = _parse_since(since) if since else None
    chosen = run(
        in_transaction(
            lambda conn, _v: ops.dead_uuids(conn, since=since_ts, uuids=uuid)
        )
    )
    if not chosen:
        console.print("no dead letters match")
        return
    with _progress() as progress:
        task = progress.add_task("replaying", total=len(chosen))
        count = run(_replay_batches(chosen, lambda n: progress.advance(task, n)))
    console.print(f"{count} dead letters are pending again")


async def _replay_batches(chosen: list[str], advance: Any, batch: int = 500) -> int:
    engine = create_engine(get_settings())
    count = 0
    try:
        for start in range(0, len(chosen), batch):
            part = chosen[start : start + batch]
            async with engine.begin() as conn:
                count += await ops.replay(conn, part)
            advance(len(part))
    finally:
        await engine.dispose()
    return count


def _parse_since(text: str) -> float:
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise fail(f"--since {text!r} is not an ISO date such as 2026-12-01") from None


def sandbox_endpoint(
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on.")
    ] = 8900,
    username: Annotated[
        str, typer.Option(help="Expected Basic auth username.")
    ] = "pega",
    password: Annotated[
        str, typer.Option(help="Expected Basic auth password.")
    ] = "pega",
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    store: Annotated[
        Path | None, typer.Option(help="Append each accepted event to this file.")
    ] = None,
    client_id: Annotated[
        str | None,
        typer.Option(help="Also run an OAuth 2.0 token endpoint for this client id."),
    ] = None,
    client_secret: Annotated[
        str, typer.Option(help="The secret of that OAuth 2.0 client.")
    ] = "pega",
    token_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port of the token endpoint.")
    ] = 8901,
) -> None:
    """A stand-in for Pega: checks Basic auth and prints (or stores) each event.

    With ``--client-id`` it also hands out OAuth 2.0 access tokens (client
    credentials grant) and accepts them as bearer tokens.
    """
    from pegabridge.sandbox import SandboxEndpoint, TokenIssuer

    async def main() -> None:
        issuer = (
            TokenIssuer(client_id, client_secret, host=host, port=token_port)
            if client_id
            else None
        )
        endpoint = SandboxEndpoint(
            username,
            password,
            host=host,
            port=port,
            store=store,
            echo=lambda line: console.print(line, highlight=False),
            issuer=issuer,
        )
        await endpoint.start()
        console.print(f"sandbox endpoint listening on {endpoint.url}", soft_wrap=True)
        if issuer is not None:
            await issuer.start()
            console.print(f"token endpoint listening on {issuer.url}", soft_wrap=True)
        try:
            await asyncio.Event().wait()
        finally:
            await endpoint.stop()
            if issuer is not None:
                await issuer.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        console.print("stopped")
    except OSError as exc:
        # Most often the port is taken, e.g. by a sandbox endpoint still running.
        raise fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
