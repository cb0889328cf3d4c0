"""``pegabridge events``: look at one recorded event and what became of it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge import ops
from pegabridge.cli.common import console, fail, in_transaction, run
from pegabridge.installs.vault import Vault

app = typer.Typer(help="Recorded events: their payload and every delivery attempt.")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


@app.command("show")
def show(
    uuid: Annotated[str, typer.Argument(help="The event's uuid.")],
    raw: Annotated[
        bool, typer.Option("--raw", help="Print only the payload, as sent.")
    ] = False,
) -> None:
    """The event's state, the JSON that is sent, and each attempt with its answer."""

    async def load(conn: AsyncConnection, _vault: Vault) -> ops.EventDetail | None:
        return await ops.event_detail(conn, uuid)

    detail = run(in_transaction(load))
    if detail is None:
        raise fail(f"no event with uuid {uuid}")
    if raw:
        typer.echo(detail.payload)
        return

    _print_summary(detail.event)
    console.print(Syntax(_pretty(detail.payload), "json", word_wrap=True))
    _print_attempts(detail.attempts)


def _print_summary(event: ops.EventRow) -> None:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    state = event.state + (f" ({event.skip_reason})" if event.skip_reason else "")
    for name, shown in (
        ("uuid", event.uuid),
        ("metric", event.metric),
        ("portal / brand", f"{event.portal_id} / {event.brand_id}"),
        ("installation", str(event.installation_id or "-")),
        ("customer", str(event.customer_id)),
        ("state", state),
        ("recorded", _when(event.created_at)),
        ("delivered", _when(event.delivered_at)),
        ("attempts", str(event.attempts)),
    ):
        table.add_row(name, shown)
    if event.last_error:
        table.add_row("last error", event.last_error[:200])
    console.print(table)


def _pretty(payload: str) -> str:
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except ValueError:
        return payload


def _print_attempts(attempts: list[ops.AttemptRow]) -> None:
    if not attempts:
        console.print("no delivery attempt yet")
        return
    table = Table(title="attempts")
    for column in ("#", "at", "outcome", "status", "ms", "answer"):
        table.add_column(column, overflow="fold")
    for a in attempts:
        table.add_row(
            str(a.attempt),
            _when(a.at),
            a.outcome,
            str(a.status_code or "-"),
            f"{a.duration_ms:.0f}",
            ops.describe_answer(a.status_code, a.error, a.response_excerpt),
        )
    console.print(table)
