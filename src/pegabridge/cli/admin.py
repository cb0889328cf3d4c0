"""Commands for portals, brands, API keys and installations."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge import ops
from pegabridge.cli.common import console, fail, in_transaction, run
from pegabridge.config import get_settings
from pegabridge.events.metrics import parse_activities
from pegabridge.installs import service
from pegabridge.installs.endpoint_guard import EndpointGuard
from pegabridge.installs.service import AuthKind, ClientAuth, InstallSettings
from pegabridge.installs.vault import Vault

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
    auth: Annotated[
        AuthKind | None,
        typer.Option(
            help="basic (username and password; the default of a new installation) "
            "or oauth2 (an OAuth 2.0 client, client credentials grant)."
        ),
    ] = None,
    token_url: Annotated[
        str | None, typer.Option(help="OAuth 2.0: the token endpoint URL.")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="OAuth 2.0: the client id.")
    ] = None,
    client_secret_stdin: Annotated[
        bool,
        typer.Option(
            "--client-secret-stdin",
            help="OAuth 2.0: read the client secret from stdin.",
        ),
    ] = False,
    scope: Annotated[
        str | None, typer.Option(help="OAuth 2.0: the scope to ask for (optional).")
    ] = None,
    client_auth: Annotated[
        ClientAuth | None,
        typer.Option(
            help="OAuth 2.0: how the client authenticates at the token endpoint: "
            "basic (Authorization header, the default) or post (form body)."
        ),
    ] = None,
) -> None:
    """Install the Pega app for a brand, or update its settings; it starts sending.

    Giving a new password or client secret to an installation that was paused for
    refused credentials resumes it. Options left out keep their saved values.
    """
    password, secret = _read_secrets(password_stdin, client_secret_stdin)
    try:
        chosen = parse_activities(activities) if activities is not None else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    # The same address check as the wizard's: a private or metadata address is
    # refused now, not at every delivery attempt.
    guard = EndpointGuard.from_settings(get_settings())
    if endpoint is not None:
        endpoint = run(service.check_endpoint(guard, endpoint))
    if token_url is not None:
        token_url = run(service.check_endpoint(guard, token_url, "token_url"))
    values = InstallSettings(
        endpoint_url=endpoint,
        username=username,
        password=password,
        activities=chosen,
        invoice_interval=invoice_interval,
        po_number=po_number,
        auth_kind=auth,
        token_url=token_url,
        client_id=client_id,
        client_secret=secret,
        scope=scope,
        client_auth=client_auth,
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


def _read_secrets(
    password_stdin: bool, client_secret_stdin: bool
) -> tuple[str | None, str | None]:
    """The password and the client secret, each read from stdin when asked for."""
    if password_stdin and client_secret_stdin:
        raise fail("give --password-stdin or --client-secret-stdin, not both")
    if password_stdin:
        return _read_line("--password-stdin", "password"), None
    if client_secret_stdin:
        return None, _read_line("--client-secret-stdin", "client secret")
    return None, None


def _read_line(option: str, what: str) -> str:
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise fail(f"{option} was given but standard input held no {what}")
    return line


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
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the figures as JSON, for scripts.")
    ] = False,
) -> None:
    """Per installation: state, backlog and its age, delivered, dead, last answer."""
    found = run(in_transaction(lambda conn, _v: ops.installation_figures(conn, portal)))
    if as_json:
        typer.echo(json.dumps([_status_document(f) for f in found], indent=2))
        return
    if not found:
        console.print("no installations yet: see `pegabridge install --help`")
        return
    for figures in found:
        console.print(_status_block(figures))


def _status_document(f: ops.InstallationFigures) -> dict[str, object]:
    return {
        "installation_id": f.id,
        "portal_id": f.portal_id,
        "brand_id": f.brand_id,
        "brand": f.brand_name,
        "state": f.state,
        "pause_reason": f.pause_reason,
        "endpoint_url": f.endpoint_url,
        "auth": f.auth,
        "counts": f.counts,
        "oldest_pending_age_s": f.oldest_pending_age_s,
        "success_rate_24h": f.success_rate_24h,
        "attempts_24h": f.attempts_24h,
        "failing": f.failing,
        "last_failure": f.last_failure,
        "last_failure_at": f.last_failure_at,
        "last_success_at": f.last_success_at,
    }


_STATE_STYLE = {"active": "green", "paused": "yellow", "draft": "dim"}


def _status_block(f: ops.InstallationFigures) -> Table:
    """One installation as label/value lines: fits an 80-column terminal."""
    now = time.time()
    style = _STATE_STYLE.get(f.state, "")
    title = (
        f"[bold]{f.brand_name or 'brand'}[/]  portal {f.portal_id} / brand "
        f"{f.brand_id}  [{style}]{f.state}[/]"
    )
    grid = Table.grid(padding=(0, 2))
    grid.title = title
    grid.title_justify = "left"
    grid.add_column(style="dim", min_width=12)
    grid.add_column(overflow="fold", max_width=64)

    grid.add_row("endpoint", f.endpoint_url or "-")
    if f.auth != "basic":
        grid.add_row("auth", "OAuth 2.0 client credentials")
    backlog = f"{f.pending:,} waiting"
    if f.oldest_pending_age_s is not None:
        backlog += f", oldest {_age(f.oldest_pending_age_s)}"
    grid.add_row("backlog", f"[bold]{backlog}[/]" if f.pending else backlog)
    grid.add_row(
        "delivered",
        f"{f.counts.get('delivered', 0):,}   dead {f.dead:,}   "
        f"skipped {f.counts.get('skipped', 0):,}",
    )
    grid.add_row("last 24 h", _rate_line(f))
    if f.last_failure_at is not None:
        colour = "red" if f.failing else "dim"
        grid.add_row(
            "last failure",
            f"[{colour}]{f.last_failure}[/] ({_age(now - f.last_failure_at)} ago)",
        )
    if f.pause_reason:
        grid.add_row("paused", f"[yellow]{f.pause_reason}[/]")
    return grid


def _rate_line(f: ops.InstallationFigures) -> str:
    total = sum(f.attempts_24h.values())
    rate = f.success_rate_24h
    if rate is None:
        return "no attempts"
    return f"{rate:.1%} of {total:,} attempts delivered"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
