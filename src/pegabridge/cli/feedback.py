"""`pegabridge feedback`: import returned mail, inspect how it is read, score parsing.

``import`` records messages from files (see :mod:`pegabridge.feedback.importer`).
``parse`` and ``report`` touch no database: ``parse`` prints what the parser finds in
files, ``report`` runs the parser over the third-party corpora and prints the share
right per field.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from pegabridge.feedback.corpus import (
    AIMS,
    CorpusMissingError,
    CorpusReport,
    run_report,
)
from pegabridge.feedback.parse import parse_message

if TYPE_CHECKING:
    from pegabridge.feedback.importer import ImportSummary

app = typer.Typer(
    name="feedback",
    help="Read bounce and complaint mail: parse files, score the parser on corpora.",
    no_args_is_help=True,
)


@app.command()
def parse(
    files: Annotated[
        list[Path], typer.Argument(help="Message files (.eml, raw RFC 5322).")
    ],
) -> None:
    """Print one JSON line per message: its kind and, per recipient, the codes,
    reason, type and feedback type found. Changes nothing."""
    for path in files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            typer.echo(f"{path}: cannot read ({exc.strerror})", err=True)
            raise typer.Exit(2) from exc
        record = {"file": str(path), **parse_message(raw).to_json_dict()}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


@app.command("import")
def import_files(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help=".eml files, folders of them, maildir folders, mbox files."
        ),
    ],
) -> None:
    """Record returned mail from files: counters, and bounce and complaint events for
    a running `serve` to deliver. Shows a progress bar and a summary; importing the
    same messages again records nothing new."""
    from pegabridge.feedback.importer import summary_table

    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        typer.echo(f"not found: {', '.join(missing)}", err=True)
        raise typer.Exit(2)

    console = Console()
    summary = asyncio.run(_import(paths, console))
    console.print(summary_table(summary))
    if summary.seen_before:
        console.print(f"{summary.seen_before} recorded before, left as they were")
    for line in summary.unreadable:
        console.print(f"unreadable: {line}", markup=False, highlight=False)


async def _import(paths: list[Path], console: Console) -> ImportSummary:
    from pegabridge.config import get_settings
    from pegabridge.feedback.importer import run_import
    from pegabridge.web.runtime import Runtime

    runtime = await Runtime.open(get_settings(), deliver=False)
    try:
        return await run_import(runtime, paths, console)
    finally:
        await runtime.close()


@app.command()
def report(
    corpus: Annotated[
        Path | None,
        typer.Option(
            help="Folder holding bounces/ and complaints/; default: "
            "$PEGABRIDGE_CORPORA, /work/shared/corpora, or ../shared/corpora."
        ),
    ] = None,
    misses: Annotated[
        bool, typer.Option("--misses", help="List every miss after the figures.")
    ] = False,
) -> None:
    """Parse the labelled corpora and print the share right per field and corpus.

    Exits 1 when a figure is below the aim of issue 6.
    """
    try:
        result = run_report(corpus)
    except CorpusMissingError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc

    console = Console()
    console.print(figures_table(result))
    if misses:
        for miss in result.misses():
            console.print(
                f"{miss.corpus}\t{miss.file}\t{miss.field}\t"
                f"expected={miss.expected!r}\tgot={miss.got!r}",
                markup=False,
                highlight=False,
            )

    if any(result.ratio(name) < aim for name, aim in AIMS.items()):
        raise typer.Exit(1)


def figures_table(result: CorpusReport) -> Table:
    """The per-field, per-corpus shares as a rich table."""
    table = Table(title=f"feedback parser on {result.messages} messages")
    table.add_column("field")
    table.add_column("corpus")
    table.add_column("right", justify="right")
    table.add_column("share", justify="right")
    table.add_column("aim", justify="right")

    for name in result.fields():
        for corpus in [*result.corpora(), None]:
            right, total = result.share(name, corpus)
            if not total:
                continue
            aim = AIMS.get(name)
            table.add_row(
                name,
                corpus or "all",
                f"{right}/{total}",
                f"{right / total:.1%}",
                f"{aim:.0%}" if aim and corpus is None else "",
            )
    return table
