"""``pegabridge mailing``: customers, contents, triggers and sends from the terminal.

Events made here are committed to the outbox; a running ``pegabridge serve`` (or
worker) delivers them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from pegabridge.cli.common import console, fail, run
from pegabridge.config import get_settings
from pegabridge.mailing.contents import (
    ContentInput,
    ContentInvalid,
    check_new_content,
    create_content,
)
from pegabridge.mailing.customers import (
    CsvRow,
    ImportReport,
    RejectedRow,
    count_utf8_lines,
    import_batch,
    read_csv,
)
from pegabridge.mailing.errors import MailingError
from pegabridge.mailing.sends import SendSpec
from pegabridge.mailing.service import Mailing
from pegabridge.mailing.triggers import (
    TriggerInput,
    check_trigger_input,
    create_trigger,
)
from pegabridge.web.runtime import Runtime

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, help="Customers, contents, triggers, sends.")
customers_app = typer.Typer(no_args_is_help=True, help="Customers of a brand.")
content_app = typer.Typer(no_args_is_help=True, help="Email contents (templates).")
trigger_app = typer.Typer(no_args_is_help=True, help="Pega trigger webhooks.")
send_app = typer.Typer(no_args_is_help=True, help="Single, quick and campaign mails.")
app.add_typer(customers_app, name="customers")
app.add_typer(content_app, name="content")
app.add_typer(trigger_app, name="trigger")
app.add_typer(send_app, name="send")

PortalOption = typer.Option(..., "--portal", help="Portal id.")
BrandOption = typer.Option(..., "--brand", help="Brand id.")
BATCH = 500


async def _with_runtime(action: Callable[[Runtime], Awaitable[T]]) -> T:
    runtime = await Runtime.open(get_settings(), deliver=False)
    try:
        return await action(runtime)
    except ContentInvalid as exc:
        for problem in exc.problems:
            console.print(f"[red]{problem}[/]")
        raise fail(exc.message) from None
    except MailingError as exc:
        raise fail(exc.message) from None
    finally:
        await runtime.close()


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        name, equals, value = item.partition("=")
        if not equals or not name.strip():
            raise fail(f"{what} must read NAME=VALUE, not {item!r}")
        pairs[name.strip()] = value
    return pairs


@customers_app.command("import")
def import_customers(
    csv_file: Path = typer.Argument(..., exists=True, dir_okay=False),
    portal: int = PortalOption,
    brand: int = BrandOption,
    strict: bool = typer.Option(
        False, help="Import nothing when any row is broken (checks the file first)."
    ),
) -> None:
    """Import customers from a CSV file (``email`` column required)."""
    try:
        with csv_file.open("rb") as raw:
            total = count_utf8_lines(raw) - 1
    except MailingError as exc:
        raise fail(exc.message) from None
    if strict:
        with csv_file.open(encoding="utf-8-sig", newline="") as handle:
            broken = [r for r in read_csv(handle) if isinstance(r, RejectedRow)]
        if broken:
            _print_rejected(broken)
            raise fail(f"{len(broken)} broken rows; nothing was imported (--strict)")

    async def action(runtime: Runtime) -> ImportReport:
        report = ImportReport()
        batch: list[CsvRow] = []
        columns = (TextColumn("importing"), BarColumn(), MofNCompleteColumn())
        with (
            Progress(*columns, console=console) as progress,
            csv_file.open(encoding="utf-8-sig", newline="") as handle,
        ):
            task = progress.add_task("rows", total=max(total, 0))
            for item in read_csv(handle):
                progress.advance(task)
                if isinstance(item, RejectedRow):
                    report.rejected.append(item)
                    continue
                batch.append(item)
                if len(batch) >= BATCH:
                    await _flush(runtime, portal, brand, batch, report)
                    batch = []
            if batch:
                await _flush(runtime, portal, brand, batch, report)
        return report

    report = run(_with_runtime(action))
    console.print(
        f"created {report.created}, updated {report.updated}, "
        f"rejected {len(report.rejected)}"
    )
    if report.rejected:
        _print_rejected(report.rejected)


async def _flush(
    runtime: Runtime, portal: int, brand: int, rows: list[CsvRow], report: ImportReport
) -> None:
    await runtime.committer.run(lambda c: import_batch(c, portal, brand, rows, report))


def _print_rejected(rows: list[RejectedRow]) -> None:
    table = Table("line", "email", "reason", title="rejected rows")
    for row in rows:
        table.add_row(str(row.line), row.email, row.reason)
    console.print(table)


@content_app.command("create")
def content_create(
    portal: int = PortalOption,
    brand: int = BrandOption,
    name: str = typer.Option(..., help="Name of the content."),
    subject: str = typer.Option(..., help="Subject template."),
    html: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="HTML template file."
    ),
    text: Path | None = typer.Option(
        None, exists=True, dir_okay=False, help="Text template file."
    ),
    var: list[str] = typer.Option([], help="Manual variable NAME=DEFAULT; repeat."),
    from_address: str = typer.Option("", help="From header, e.g. 'Shop <n@s.test>'."),
) -> None:
    """Create a content; template errors are listed with part and line."""
    values = ContentInput(
        name=name,
        subject=subject,
        html=html.read_text(encoding="utf-8") if html else "",
        text=text.read_text(encoding="utf-8") if text else "",
        variables=dict(_pairs(var, "--var")),
        from_address=from_address,
    )

    async def action(runtime: Runtime) -> int:
        check_new_content(values)
        content = await runtime.committer.run(
            lambda c: create_content(c, portal, brand, values)
        )
        return content.id

    console.print(f"content {run(_with_runtime(action))} created")


@trigger_app.command("create")
def trigger_create(
    portal: int = PortalOption,
    brand: int = BrandOption,
    name: str = typer.Option(..., help="Last part of POST /api/v1/triggers/{name}."),
    content: int = typer.Option(..., help="Content id to send."),
    key: str = typer.Option("external_id", help="external_id, email or customer_id."),
    customer: list[str] = typer.Option([], help="Customer FIELD=$.path; repeat."),
    var: list[str] = typer.Option([], help="Manual variable NAME=$.path; repeat."),
    dedupe: str = typer.Option("", help="Path of a value that makes calls unique."),
    mailing_type: str = typer.Option("", help="Mailing type of the sends."),
) -> None:
    """Create a trigger; prints its secret once."""
    values = TriggerInput(
        name=name,
        content_id=content,
        customer_key=key,
        customer=dict(_pairs(customer, "--customer")),
        variables=dict(_pairs(var, "--var")),
        dedupe_path=dedupe,
        mailing_type=mailing_type,
    )

    async def action(runtime: Runtime) -> str:
        check_trigger_input(values)
        _, secret = await runtime.committer.run(
            lambda c: create_trigger(c, portal, brand, values)
        )
        return secret

    secret = run(_with_runtime(action))
    console.print(f"trigger {name} created; its secret (shown once): {secret}")


@send_app.command("quick")
def send_quick(
    portal: int = PortalOption,
    brand: int = BrandOption,
    content: int = typer.Option(..., help="Content id."),
    customer: list[int] = typer.Option([], help="Customer id; repeat (none: all)."),
    var: list[str] = typer.Option([], help="Manual option NAME=VALUE; repeat."),
    campaign: int = typer.Option(0, help="Campaign id (makes a CAMPAIGNMAIL)."),
    step: int = typer.Option(0, help="Campaign step (campaign object id)."),
    mailing_type: str = typer.Option("", help="Mailing type."),
    test: bool = typer.Option(False, help="Mark the send as a test."),
    override: str = typer.Option("", help="Send every email to this address."),
    hourly_limit: int = typer.Option(0, help="At most this many emails per hour."),
) -> None:
    """Send a quick mail (or a campaign mail) to customers of a brand."""
    spec = SendSpec(
        portal_id=portal,
        brand_id=brand,
        event_type="CAMPAIGNMAIL" if campaign else "QUICKMAIL",
        content_id=content,
        campaign_id=campaign,
        campaign_object_id=step,
        mailing_type=mailing_type,
        test_mailing=test,
        address_override=override,
        manual_options=dict(_pairs(var, "--var")),
        hourly_limit=hourly_limit,
        customer_ids=customer or None,
    )
    _print_summary(run(_with_runtime(lambda r: _send(r, spec, None))))


@send_app.command("resume")
def send_resume(send_id: int = typer.Argument(...)) -> None:
    """Continue a send that stopped; nothing already sent is sent again."""
    _print_summary(run(_with_runtime(lambda r: _send(r, None, send_id))))


async def _send(
    runtime: Runtime, spec: SendSpec | None, send_id: int | None
) -> dict[str, Any]:
    parts = Mailing.assemble(
        runtime.settings, runtime.db, runtime.committer, runtime.vault, runtime.recorder
    )
    try:
        if send_id is None:
            assert spec is not None
            send_id = await parts.sender.create_send(spec)
        summary = await parts.sender.run_send(send_id)
    finally:
        await parts.close()
    return summary.as_json()


def _print_summary(summary: dict[str, Any]) -> None:
    console.print_json(json.dumps(summary))
