"""Commands for portals, brands, API keys and installations."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.cli.common import console, fail, in_transaction, run
from pegabridge.events.metrics import parse_activities
from pegabridge.installs import service
from pegabridge.installs.service import InstallSettings
from pegabridge.installs.vault import Vault
from pegabridge.store.tables import outbox

portal_app = typer.Typer(help="Portals: the client accounts of the platform.")
brand_app = typer.Typer(help="Brands within a portal.")
apikey_app = typer.Typer(help="API keys with which other systems hand in activities.")

PortalOpt = Annotated[int, typer.Option("--portal", help="The portal id.")]
BrandOpt = Annotated[
    int, typer.Option("--brand", help="The brand id within the portal.")
]


@portal_app.command("create")
def portal_create(
    portal_id: Annotated[int, typer.Option("--id", help="The portal's id.")],
    name: Annotated[str, typer.Option(help="The portal's name.")],
) -> None:
    """Create a portal."""
    run(in_transaction(lambda conn, _v: service.create_portal(conn, portal_id, name)))
    console.print(f"portal {portal_id} ({name}) created")


@brand_app.command("create")
def brand_create(
    portal: PortalOpt,
    brand_id: Annotated[int, typer.Option("--id", help="The brand's id.")],
    name: Annotated[str, typer.Option(help="The brand's name.")],
) -> None:
    """Create a brand of a portal."""
    run(
        in_transaction(
            lambda conn, _v: service.create_brand(conn, portal, brand_id, name)
        )
    )
    console.print(f"brand {brand_id} ({name}) of portal {portal} created")


@apikey_app.command("create")
def apikey_create(
    portal: PortalOpt,
    label: Annotated[str, typer.Option(help="What the key is for.")] = "",
) -> None:
    """Make an API key for a portal and print it, once: it is stored hashed."""
    key = run(
        in_transaction(lambda conn, _v: service.create_api_key(conn, portal, label))
    )
    console.print(key, soft_wrap=True, highlight=False)


def install(
    portal: PortalOpt,
    brand: BrandOpt,
    endpoint: Annotated[
        str | None, typer.Option(help="The Pega REST endpoint URL.")
    ] = None,
    username: Annotated[str | None, typer.Option(help="Basic auth username.")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    activities: Annotated[
        str | None,
        typer.Option(help="Comma-separated: broadcasts,opens,clicks,bounces,..."),
    ] = None,
    invoice_interval: Annotated[
        str | None, typer.Option(help="monthly, quarterly or yearly.")
    ] = None,
    po_number: Annotated[
        str | None, typer.Option(help="PO number on invoices.")
    ] = None,
) -> None:
    """Install the Pega app for a brand, or update its settings; it starts sending.

    Giving a new password to an installation that was paused for refused credentials
    resumes it.
    """
    password = _read_password() if password_stdin else None
    chosen = parse_activities(activities) if activities is not None else None
    values = InstallSettings(
        endpoint_url=endpoint,
        username=username,
        password=password,
        activities=chosen,
        invoice_interval=invoice_interval,
        po_number=po_number,
    )

    async def save(conn: AsyncConnection, vault: Vault) -> service.Installation:
        return await service.save_installation(
            conn, vault, portal, brand, values, activate=True
        )

    installation = run(in_transaction(save))
    console.print(
        f"installation {installation.id} for brand {brand} of portal {portal}: "
        f"{installation.state.value}"
    )


def _read_password() -> str:
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise fail("--password-stdin was given but standard input held no password")
    return password


async def _require_installation(
    conn: AsyncConnection, portal: int, brand: int
) -> service.Installation:
    installation = await service.find_installation(conn, portal, brand)
    if installation is None:
        raise service.InstallError(
            f"brand {brand} of portal {portal} has no Pega app installed"
        )
    return installation


def pause(
    portal: PortalOpt,
    brand: BrandOpt,
    reason: Annotated[str, typer.Option(help="Why, as shown in status.")] = "paused "
    "by the operator",
) -> None:
    """Stop sending for a brand; its events wait in the outbox."""

    async def act(conn: AsyncConnection, _vault: Vault) -> bool:
        inst = await _require_installation(conn, portal, brand)
        return await service.pause(conn, inst.id, reason)

    changed = run(in_transaction(act))
    console.print("paused" if changed else "it was not active; nothing changed")


def resume(portal: PortalOpt, brand: BrandOpt) -> None:
    """Send again for a paused brand; the waiting events go first."""

    async def act(conn: AsyncConnection, _vault: Vault) -> bool:
        inst = await _require_installation(conn, portal, brand)
        return await service.resume(conn, inst.id)

    changed = run(in_transaction(act))
    console.print("resumed" if changed else "it was not paused; nothing changed")


def uninstall(
    portal: PortalOpt,
    brand: BrandOpt,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
) -> None:
    """Remove the Pega app from a brand; events still waiting are not sent."""
    if not yes:
        typer.confirm(
            "Events still waiting will not be sent (they are kept as dead letters). "
            "Uninstall?",
            abort=True,
        )

    async def act(conn: AsyncConnection, _vault: Vault) -> None:
        inst = await _require_installation(conn, portal, brand)
        await service.uninstall(conn, inst.id)

    run(in_transaction(act))
    console.print("uninstalled")


def status(
    portal: Annotated[int | None, typer.Option(help="Only this portal.")] = None,
) -> None:
    """Per installation: state, pending, delivered, dead, oldest pending age."""
    rows = run(in_transaction(lambda conn, _v: _status_rows(conn, portal)))
    table = Table(title="pegabridge installations")
    for column in (
        "portal",
        "brand",
        "state",
        "pending",
        "delivered",
        "dead",
        "skipped",
        "oldest pending",
        "endpoint",
        "why paused",
    ):
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(v) for v in row])
    console.print(table)
    if not rows:
        console.print("no installations yet: see `pegabridge install --help`")


async def _status_rows(
    conn: AsyncConnection, portal: int | None
) -> list[tuple[object, ...]]:
    now = time.time()
    result: list[tuple[object, ...]] = []
    for inst in await service.list_installations(conn, portal):
        rows = await conn.execute(
            select(outbox.c.state, func.count().label("n"))
            .where(outbox.c.installation_id == inst.id)
            .group_by(outbox.c.state)
        )
        counts = {row.state: row.n for row in rows}
        oldest = await conn.scalar(
            select(func.min(outbox.c.created_at)).where(
                outbox.c.installation_id == inst.id, outbox.c.state == "pending"
            )
        )
        result.append(
            (
                inst.portal_id,
                inst.brand_id,
                inst.state.value,
                counts.get("pending", 0),
                counts.get("delivered", 0),
                counts.get("dead", 0),
                counts.get("skipped", 0),
                _age(now - oldest) if oldest else "-",
                inst.endpoint_url,
                inst.pause_reason or "-",
            )
        )
    return result


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
