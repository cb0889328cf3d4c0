"""``make bench``: run every benchmark and write ``docs/benchmarks.md``.

Each benchmark module has a ``run()`` (plain or async) returning its figures as a dict.
``python -m bench --only relay,feedback`` runs a selection; ``--quick`` passes smaller
sizes where a module accepts them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO

# name -> (module, what it measures, arguments for --quick)
BENCHMARKS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "relay": (
        "bench.bench_relay",
        "API ingest to delivery on SQLite: events/s, latency at 1,000/s, memory",
        {"count": 5000, "seconds": 5.0, "backlog": 100_000},
    ),
    "http_clients": (
        "bench.bench_http_clients",
        "aiohttp and httpx side by side, small JSON POSTs, keep-alive",
        {"count": 2000, "rounds": 2},
    ),
    "tracking": (
        "bench.bench_tracking",
        "open pixel and redirects over HTTP, events recorded",
        {"count": 5000},
    ),
    "mailing": (
        "bench.bench_mailing",
        "bulk send into a local SMTP sink",
        {"count": 10_000},
    ),
    "feedback": (
        "bench.bench_feedback",
        "bounce messages parsed and classified, one core",
        {"min_seconds": 2.0},
    ),
    "agents": ("bench.bench_agents", "user-agent classification", {}),
    "scaleout": (
        "bench.bench_scaleout",
        "PostgreSQL end to end with 1, 2 and 4 worker processes",
        {"count": 10_000},
    ),
}


def _call(module_name: str, quick_args: dict[str, Any], quick: bool) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    runner = module.run
    accepted = inspect.signature(runner).parameters
    kwargs = {k: v for k, v in quick_args.items() if k in accepted} if quick else {}
    if "quick" in accepted and quick:
        kwargs["quick"] = True
    result = runner(**kwargs)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    figures: dict[str, Any] = result
    return figures


def _rows(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows = []
        for key, inner in value.items():
            rows.extend(_rows(f"{prefix}.{key}" if prefix else str(key), inner))
        return rows
    return [
        (prefix, json.dumps(value) if isinstance(value, list | bool) else str(value))
    ]


def render(results: dict[str, Any], quick: bool) -> str:
    """The markdown page of the figures."""
    lines = [
        "# Figures",
        "",
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `make bench`"
        f"{' (quick sizes)' if quick else ''} on {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.machine()}. These machines are "
        "shared and noisy: compare ratios measured in the same run, not absolute "
        "figures across runs.",
        "",
    ]
    for name, outcome in results.items():
        _module, what, _quick = BENCHMARKS[name]
        lines += [f"## {name}: {what}", ""]
        if "error" in outcome:
            lines += [f"Did not run: `{outcome['error']}`", ""]
            continue
        lines += [
            f"Took {outcome['seconds']:.0f} s.",
            "",
            "| figure | value |",
            "| --- | --- |",
        ]
        lines += [f"| {k} | {v} |" for k, v in _rows("", outcome["figures"])]
        lines.append("")
    return "\n".join(lines)


MARKER = "<!-- figures below are written by make bench -->"


def _keep_reading(out: Path) -> str:
    """The hand-written part of the page above the marker, kept across runs."""
    if not out.exists():
        return ""
    text = out.read_text(encoding="utf-8")
    if MARKER not in text:
        return ""
    return text.split(MARKER, 1)[0] + MARKER + "\n\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--out", default=str(REPO / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    names = [n for n in args.only.split(",") if n] or list(BENCHMARKS)
    results: dict[str, Any] = {}
    for name in names:
        module_name, what, quick_args = BENCHMARKS[name]
        print(f"== {name}: {what}", file=sys.stderr)
        started = time.perf_counter()
        try:
            figures = _call(module_name, quick_args, args.quick)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        results[name] = {"figures": figures, "seconds": time.perf_counter() - started}
        print(json.dumps(figures, indent=2), file=sys.stderr)

    out = Path(args.out)
    out.write_text(_keep_reading(out) + render(results, args.quick), encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
