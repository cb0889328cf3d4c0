"""`pegabridge agents`: inspect user-agent classification and refresh Apple's ranges."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pegabridge.tracking.agents import classify_agent
from pegabridge.tracking.machine import Hit, HitKind, MachineDetector
from pegabridge.tracking.relay_ranges import (
    APPLE_RELAY_FEED_URL,
    RANGES_PATH_ENV,
    AddressRanges,
    RelayRangesError,
    configured_ranges_path,
    load_configured_ranges,
    load_ranges,
    refresh_ranges_file,
)

app = typer.Typer(
    name="agents",
    help="Classify user agents and manage Apple's private relay range list.",
    no_args_is_help=True,
)


@app.command()
def classify(
    kind: Annotated[
        HitKind, typer.Option(help="Classify each line as an open or a click.")
    ] = HitKind.OPEN,
    ranges: Annotated[
        Path | None,
        typer.Option(
            help=f"Apple relay range file; default: the file in {RANGES_PATH_ENV}."
        ),
    ] = None,
) -> None:
    """Read `user agent[TAB client address[TAB method]]` lines on standard input.

    Prints one JSON line per input line with `os`, `browser`, `machine_generated`,
    `reason` and `detail`. Timing rules need send and click times, which a single
    line does not carry, so they do not apply here.
    """
    detector = MachineDetector(apple_relay=_relay_ranges(ranges))
    for line in sys.stdin:
        record = classify_line(line.rstrip("\r\n"), kind, detector)
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


def classify_line(
    line: str, kind: HitKind, detector: MachineDetector
) -> dict[str, object]:
    """The JSON record `classify` prints for one input line."""
    user_agent, _, rest = line.partition("\t")
    client_ip, _, method = rest.partition("\t")
    hit = Hit(
        kind=kind,
        user_agent=user_agent,
        client_ip=client_ip.strip(),
        method=method.strip() or "GET",
    )

    agent = classify_agent(user_agent)
    verdict = detector.classify(hit)
    return {
        "os": agent.os,
        "browser": agent.browser,
        "machine_generated": verdict.machine_generated,
        "reason": verdict.reason,
        "detail": verdict.detail,
    }


def _relay_ranges(path: Path | None) -> AddressRanges | None:
    try:
        return load_configured_ranges() if path is None else load_ranges(path)
    except RelayRangesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


@app.command("refresh-ranges")
def refresh_ranges(
    url: Annotated[
        str, typer.Option(help="Where to download the range list (CSV or plain).")
    ] = APPLE_RELAY_FEED_URL,
    file: Annotated[
        Path | None,
        typer.Option(
            help=f"File to replace; default: the file named by {RANGES_PATH_ENV}."
        ),
    ] = None,
) -> None:
    """Download Apple's private relay ranges and replace the range file atomically."""
    target = file or configured_ranges_path()
    if target is None:
        typer.echo(
            f"error: no range file: pass --file or set {RANGES_PATH_ENV}", err=True
        )
        raise typer.Exit(code=2)

    try:
        ranges = refresh_ranges_file(target, url)
    except RelayRangesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from exc

    typer.echo(f"{target}: {len(ranges)} address ranges from {url}")
