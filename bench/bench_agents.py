"""Benchmark of the tracking core: user-agent classification, machine rules, tokens.

`run()` returns a dict of figures; `python bench/bench_agents.py` prints it as JSON.

- cold: every user agent is new (our LRU and ua-parser's own cache both miss);
- cached: a few hundred agents repeat, as they do in real traffic;
each "classification" is `classify_agent` plus `MachineDetector.classify` on one hit.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pegabridge.tracking.agents import classify_agent, clear_agent_cache
from pegabridge.tracking.machine import Hit, HitKind, MachineDetector
from pegabridge.tracking.relay_ranges import AddressRanges, load_ranges
from pegabridge.tracking.tokens import KeyRing, SigningKey, TokenKind, TokenPayload

RELAY_LIST = (
    Path(os.environ.get("PEGABRIDGE_SHARED_DATA_DIR", "/work/shared/data"))
    / "apple-private-relay-ipv4-ranges.txt"
)

TEMPLATES = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/{major}.0.{minor}.{patch} Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{major}.0) Gecko/20100101 "
    "Firefox/{major}.{minor}.{patch}",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_{minor}) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/{major}.{patch} Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS {major}_{minor} like Mac OS X) "
    "AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E{patch}",
    "Mozilla/5.0 (Linux; Android {major}; SM-G99{minor}B) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/{patch}.0.0.0 Mobile Safari/537.36",
    "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.{patch}; Pro)",
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
    "(via ggpht.com GoogleImageProxy {patch})",
    "Outlook-iOS/{patch}.{minor}.prod.iphone ({major}.0.0)",
    "python-requests/2.{minor}.{patch}",
)


def distinct_agents(count: int) -> list[str]:
    """`count` different, realistic user agents."""
    agents = []
    for index in range(count):
        template = TEMPLATES[index % len(TEMPLATES)]
        major, minor, patch = 60 + index % 70, index % 10, 1000 + index
        agents.append(template.format(major=major, minor=minor, patch=patch))
    return agents


def hits_of(agents: list[str]) -> list[Hit]:
    addresses = ("104.28.28.76", "203.0.113.7", "2001:db8::1", "66.249.84.10")
    return [
        Hit(
            kind=HitKind.OPEN if index % 2 else HitKind.CLICK,
            user_agent=agent,
            client_ip=addresses[index % len(addresses)],
            seconds_since_send=120.0,
        )
        for index, agent in enumerate(agents)
    ]


def rate_per_s(count: int, elapsed_s: float) -> float:
    return round(count / elapsed_s, 1) if elapsed_s > 0 else float("inf")


def classify_all(detector: MachineDetector, hits: list[Hit]) -> float:
    started = time.perf_counter()
    for hit in hits:
        classify_agent(hit.user_agent)
        detector.classify(hit)
    return time.perf_counter() - started


def bench_classification(relay: AddressRanges | None) -> dict[str, Any]:
    detector = MachineDetector(apple_relay=relay)
    classify_agent("warm up ua-parser's lazy regexes")

    cold_hits = hits_of(distinct_agents(5_000))
    clear_agent_cache()
    cold_s = classify_all(detector, cold_hits)

    warm_hits = hits_of(distinct_agents(300)) * 200
    classify_all(detector, warm_hits[:300])
    cached_s = classify_all(detector, warm_hits)

    long_agent = TEMPLATES[0].format(major=120, minor=0, patch=1) + " x" * 5_000
    started = time.perf_counter()
    classify_agent(long_agent)
    long_ms = (time.perf_counter() - started) * 1000

    return {
        "classify_cold_per_s": rate_per_s(len(cold_hits), cold_s),
        "classify_cached_per_s": rate_per_s(len(warm_hits), cached_s),
        "classify_10kb_agent_ms": round(long_ms, 3),
    }


def bench_relay() -> dict[str, Any]:
    if not RELAY_LIST.is_file():
        return {"relay_ranges": f"skipped: {RELAY_LIST} absent"}

    started = time.perf_counter()
    ranges = load_ranges(RELAY_LIST)
    load_ms = (time.perf_counter() - started) * 1000

    addresses = [f"104.28.{index % 256}.{index % 199}" for index in range(50_000)]
    started = time.perf_counter()
    for address in addresses:
        ranges.contains(address)
    lookup_s = time.perf_counter() - started

    return {
        "relay_load_ms": round(load_ms, 2),
        "relay_intervals": len(ranges),
        "relay_lookups_per_s": rate_per_s(len(addresses), lookup_s),
    }


def bench_tokens() -> dict[str, Any]:
    ring = KeyRing([SigningKey(1, b"benchmark secret, 32 bytes long!")])
    payloads = [
        TokenPayload(TokenKind.CLICK, 42, 1_000_000 + index, index % 40)
        for index in range(20_000)
    ]

    started = time.perf_counter()
    tokens = [ring.sign(payload) for payload in payloads]
    sign_s = time.perf_counter() - started

    started = time.perf_counter()
    for token in tokens:
        ring.verify(token)
    verify_s = time.perf_counter() - started

    return {
        "token_sign_per_s": rate_per_s(len(payloads), sign_s),
        "token_verify_per_s": rate_per_s(len(tokens), verify_s),
        "click_token_chars": len(tokens[-1]),
    }


def run() -> dict[str, Any]:
    """Measure the tracking core and return the figures by name."""
    relay = load_ranges(RELAY_LIST) if RELAY_LIST.is_file() else None
    return {
        **bench_classification(relay),
        **bench_relay(),
        **bench_tokens(),
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
