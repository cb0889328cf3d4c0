"""`pegabridge feedback`: inspect how returned mail is read, and score the parser.

Nothing here touches the database: ``parse`` prints what the parser finds in files,
``report`` runs the parser over the third-party corpora and prints the share right
per field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

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
