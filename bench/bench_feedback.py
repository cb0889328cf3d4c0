"""Benchmark of the feedback parser: messages parsed and classified per second.

`run()` returns a dict of figures; `python bench/bench_feedback.py` prints it as JSON.
Every corpus message (bounces, complaints, labelled or not) is read into memory
first, then parsed with `parse_message` (which classifies every recipient) in a loop
on one core for at least `min_seconds`. Aim (issue 6): 500 messages per second.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pegabridge.feedback.corpus import CorpusMissingError, corpus_files
from pegabridge.feedback.parse import parse_message

AIM_PER_S = 500.0
SAMPLES = Path(__file__).resolve().parents[1] / "tests" / "samples" / "feedback"


def load_messages() -> tuple[str, list[bytes]]:
    """The corpus messages, or the repository's own samples when it is absent."""
    try:
        return "corpora", [path.read_bytes() for path in corpus_files()]
    except CorpusMissingError:
        return "samples", [path.read_bytes() for path in sorted(SAMPLES.glob("*.eml"))]


def run(min_seconds: float = 3.0) -> dict[str, Any]:
    """Parse the messages repeatedly for `min_seconds` and report the rate."""
    source, messages = load_messages()
    total_bytes = sum(len(raw) for raw in messages)

    parsed = 0
    rounds = 0
    started = time.perf_counter()
    while True:
        for raw in messages:
            parse_message(raw)
        parsed += len(messages)
        rounds += 1
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            break

    per_s = parsed / elapsed
    return {
        "benchmark": "feedback.parse_message",
        "source": source,
        "distinct_messages": len(messages),
        "mean_message_bytes": round(total_bytes / max(len(messages), 1)),
        "rounds": rounds,
        "messages_parsed": parsed,
        "seconds": round(elapsed, 3),
        "messages_per_s": round(per_s, 1),
        "aim_per_s": AIM_PER_S,
        "meets_aim": per_s >= AIM_PER_S,
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
