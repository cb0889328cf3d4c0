"""Machine detection: hand-made mail client, proxy and scanner cases, and each rule."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pegabridge.tracking.agents import classify_agent
from pegabridge.tracking.machine import (
    Hit,
    HitKind,
    MachineDetector,
    MachineSettings,
    PriorClick,
    Reason,
    scanner_agent_label,
)
from pegabridge.tracking.relay_ranges import RelayRangesError, load_ranges

SAMPLES_DIR = Path(__file__).parent.parent / "samples" / "tracking"
CORPORA_DIR = Path(os.environ.get("PEGABRIDGE_CORPORA_DIR", "/work/shared/corpora"))
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)

with (SAMPLES_DIR / "agents.yaml").open(encoding="utf-8") as _stream:
    SAMPLES: dict[str, Any] = yaml.safe_load(_stream)


def sample_detector() -> MachineDetector:
    settings = MachineSettings(scanner_networks=tuple(SAMPLES["scanner_networks"]))
    relay = load_ranges(SAMPLES_DIR / "relay-ranges.txt")
    return MachineDetector(settings, apple_relay=relay)


def hit_of(case: dict[str, Any]) -> Hit:
    return Hit(
        kind=HitKind(case.get("kind", "open")),
        user_agent=case["user_agent"],
        client_ip=case.get("client_ip", ""),
        method=case.get("method", "GET"),
        headers=case.get("headers", {}),
        seconds_since_send=case.get("seconds_since_send"),
        link_id=case.get("link_id", 0),
        recent_clicks=[
            PriorClick(link, at) for link, at in case.get("recent_clicks", [])
        ],
        link_count=case.get("link_count", 0),
    )


@pytest.mark.parametrize("case", SAMPLES["cases"], ids=lambda case: case["name"])
def test_sample_case_gets_its_expected_verdict(case: dict[str, Any]) -> None:
    verdict = sample_detector().classify(hit_of(case))

    assert verdict.reason == case["machine"]
    assert verdict.machine_generated is bool(case["machine"])


@pytest.mark.parametrize(
    "case",
    [case for case in SAMPLES["cases"] if "browser" in case],
    ids=lambda case: case["name"],
)
def test_sample_case_gets_its_expected_names(case: dict[str, Any]) -> None:
    agent = classify_agent(case["user_agent"])

    assert (agent.os, agent.browser) == (case["os"], case["browser"])


def test_every_reason_appears_in_the_sample_cases() -> None:
    seen = {case["machine"] for case in SAMPLES["cases"]}

    assert {reason.value for reason in Reason} <= seen


def test_without_relay_ranges_a_bare_mozilla_open_is_flagged_by_its_agent() -> None:
    detector = MachineDetector(apple_relay=None)

    verdict = detector.classify(Hit(HitKind.OPEN, "Mozilla/5.0", "104.28.28.76"))

    assert verdict.reason == Reason.APPLE_MPP_AGENT


def test_the_bare_agent_rule_can_be_switched_off() -> None:
    detector = MachineDetector(MachineSettings(flag_bare_mozilla_agent=False))

    verdict = detector.classify(Hit(HitKind.OPEN, "Mozilla/5.0", "203.0.113.1"))

    assert not verdict.machine_generated


def test_the_click_delay_threshold_is_configurable() -> None:
    detector = MachineDetector(MachineSettings(min_click_delay_s=60.0))
    hit = Hit(HitKind.CLICK, CHROME, seconds_since_send=30.0)

    assert detector.classify(hit).reason == Reason.TOO_SOON_AFTER_SEND
    assert not MachineDetector().classify(hit).machine_generated


def test_an_open_soon_after_the_send_is_not_flagged_for_timing() -> None:
    hit = Hit(HitKind.OPEN, CHROME, seconds_since_send=1.0)

    assert not MachineDetector().classify(hit).machine_generated


def test_a_burst_without_a_known_link_count_needs_three_links() -> None:
    detector = MachineDetector()
    two = [PriorClick(1, 99.0)]
    three = [PriorClick(1, 98.5), PriorClick(2, 99.5)]

    def burst(prior: list[PriorClick]) -> str:
        hit = Hit(HitKind.CLICK, CHROME, seconds_since_send=100.0, link_id=3)
        return detector.classify(
            Hit(**{**hit_fields(hit), "recent_clicks": prior})
        ).reason

    assert burst(two) != Reason.BURST_OF_LINKS
    assert burst(three) == Reason.BURST_OF_LINKS


def hit_fields(hit: Hit) -> dict[str, Any]:
    return {name: getattr(hit, name) for name in Hit.__dataclass_fields__}


def test_the_first_rule_that_fires_gives_the_reason() -> None:
    hit = Hit(HitKind.CLICK, "curl/8.0", method="HEAD", seconds_since_send=1.0)

    assert MachineDetector().classify(hit).reason == Reason.HEAD_REQUEST


def test_header_names_are_matched_in_any_case() -> None:
    hit = Hit(HitKind.OPEN, CHROME, headers={"PURPOSE": "Prefetch"})

    assert MachineDetector().classify(hit).reason == Reason.PREFETCH_HEADER


def test_a_scanner_verdict_names_the_matching_pattern() -> None:
    verdict = MachineDetector().classify(Hit(HitKind.CLICK, "python-requests/2.31"))

    assert verdict.detail == "http-library"


def test_a_bad_client_address_is_not_in_any_range() -> None:
    detector = sample_detector()

    verdict = detector.classify(Hit(HitKind.OPEN, CHROME, client_ip="not-an-ip"))

    assert not verdict.machine_generated


def test_an_invalid_scanner_network_is_refused_at_start_up() -> None:
    with pytest.raises(RelayRangesError, match="not an IP network"):
        MachineDetector(MachineSettings(scanner_networks=("192.0.2.0/33",)))


def test_a_cubot_phone_is_not_taken_for_a_bot() -> None:
    user_agent = (
        "Mozilla/5.0 (Linux; Android 10; CUBOT X19) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/88.0.4324.93 Mobile Safari/537.36"
    )

    assert scanner_agent_label(user_agent) == ""


PEOPLE_BROWSERS = {
    "Chrome",
    "Chrome Mobile",
    "Chrome Mobile iOS",
    "Firefox",
    "Firefox Mobile",
    "Safari",
    "Mobile Safari",
    "Mobile Safari UI/WKWebView",
    "Edge",
    "Opera",
    "IE",
    "Samsung Internet",
    "Apple Mail",
    "Outlook",
    "Thunderbird",
    "Windows Live Mail",
}


def test_no_uap_core_browser_of_people_is_taken_for_a_scanner() -> None:
    path = CORPORA_DIR / "user-agents" / "uap-core" / "test_ua.yaml"
    if not path.is_file():
        pytest.skip(
            f"uap-core corpus file {path} is absent (set PEGABRIDGE_CORPORA_DIR)"
        )
    with path.open(encoding="utf-8") as stream:
        cases = yaml.safe_load(stream)["test_cases"]

    people = [case for case in cases if case["family"] in PEOPLE_BROWSERS]
    flagged = [
        case["user_agent_string"]
        for case in people
        if scanner_agent_label(case["user_agent_string"])
    ]

    assert len(people) > 50
    assert flagged == []
