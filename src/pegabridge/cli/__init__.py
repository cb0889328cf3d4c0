"""The ``pegabridge`` command."""

from __future__ import annotations

import importlib
import importlib.util

import typer

from pegabridge.cli import admin, service, worker

app = typer.Typer(
    no_args_is_help=True,
    help="pegabridge: every email interaction, in real time, to Pega.",
    pretty_exceptions_show_locals=False,
)
app.add_typer(admin.portal_app, name="portal")
app.add_typer(admin.brand_app, name="brand")
app.add_typer(admin.apikey_app, name="apikey")
app.add_typer(service.dead_app, name="dead-letters")
app.command("install")(admin.install)
app.command("pause")(admin.pause)
app.command("resume")(admin.resume)
app.command("uninstall")(admin.uninstall)
app.command("status")(admin.status)
app.command("serve")(service.serve)
app.command("worker")(worker.worker)
app.command("purge")(worker.purge)
app.command("migrate")(service.migrate)
app.command("schema")(service.schema)
app.command("ingest")(service.ingest)
app.command("sandbox-endpoint")(service.sandbox_endpoint)

# Command groups of the other packages, each a Typer app named ``app`` in its module.
_GROUPS = {
    "feedback": "pegabridge.cli.feedback",
    "agents": "pegabridge.cli.agents",
    "mailing": "pegabridge.cli.mailing",
    "events": "pegabridge.cli.events",
}
for _name, _module in _GROUPS.items():
    if importlib.util.find_spec(_module) is not None:
        app.add_typer(importlib.import_module(_module).app, name=_name)


def main() -> None:
    """Entry point of the console script."""
    app()
