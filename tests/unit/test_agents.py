"""The user-agent wrapper: ua-parser's families pass through, with our few renames."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from pegabridge.tracking.agents import (
    MAX_PARSED_LENGTH,
    Agent,
    agent_cache_stats,
    classify_agent,
    raw_families,
)

CORPORA_DIR = Path(os.environ.get("PEGABRIDGE_CORPORA_DIR", "/work/shared/corpora"))
UAP_CORE_DIR = CORPORA_DIR / "user-agents" / "uap-core"

# What the interaction format calls the families that ua-parser names differently.
# Written out here, independently of the table in agents.py, so a change to that
# table shows up as a failing test.
RENAMED_BROWSERS = {
    "Other": "",
    "IE": "Internet explorer",
    "IE Large Screen": "Internet explorer",
    "IE Mobile": "Internet explorer mobile",
    "MacOutlook": "Outlook",
    "Outlook-iOS": "Outlook",
    "Outlook-iOS-Android": "Outlook",
    "GmailImageProxy": "Gmail",
    "YahooMailProxy": "Yahoo Mail",
}
IMAGE_PROXY_MARKERS = ("GoogleImageProxy", "YahooMailProxy")


def load_uap_cases(name: str) -> list[dict[str, Any]]:
    path = UAP_CORE_DIR / name
    if not path.is_file():
        pytest.skip(
            f"uap-core corpus file {path} is absent (set PEGABRIDGE_CORPORA_DIR)"
        )
    with path.open(encoding="utf-8") as stream:
        cases: list[dict[str, Any]] = yaml.safe_load(stream)["test_cases"]
    return cases


def is_image_proxy(user_agent: str) -> bool:
    return any(marker in user_agent for marker in IMAGE_PROXY_MARKERS)


def test_every_uap_core_browser_family_passes_through_unchanged() -> None:
    cases = load_uap_cases("test_ua.yaml")

    wrong = [
        (case["user_agent_string"], case["family"], raw.browser)
        for case in cases
        if (raw := raw_families(case["user_agent_string"])).browser != case["family"]
    ]

    assert len(cases) > 1000
    assert wrong == []


def test_every_uap_core_os_family_passes_through_unchanged() -> None:
    cases = load_uap_cases("test_os.yaml")

    wrong = [
        (case["user_agent_string"], case["family"], raw.os)
        for case in cases
        if (raw := raw_families(case["user_agent_string"])).os != case["family"]
    ]

    assert len(cases) > 400
    assert wrong == []


def test_uap_core_browser_families_get_our_names_and_only_the_listed_renames() -> None:
    cases = load_uap_cases("test_ua.yaml")

    wrong = []
    for case in cases:
        expected = RENAMED_BROWSERS.get(case["family"], case["family"])
        got = classify_agent(case["user_agent_string"]).browser
        if got != expected:
            wrong.append((case["user_agent_string"], expected, got))

    assert wrong == []


def test_uap_core_os_families_keep_their_names_except_unknown_and_proxies() -> None:
    cases = load_uap_cases("test_os.yaml")

    wrong = []
    for case in cases:
        user_agent = case["user_agent_string"]
        unknown = case["family"] == "Other" or is_image_proxy(user_agent)
        expected = "" if unknown else case["family"]
        if classify_agent(user_agent).os != expected:
            wrong.append((user_agent, expected, classify_agent(user_agent).os))

    assert wrong == []


def test_internet_explorer_takes_the_spelling_of_the_spec() -> None:
    agent = classify_agent(
        "Mozilla/5.0 (compatible; MSIE 10.0; Windows NT 6.1; Trident/6.0)"
    )

    assert agent == Agent(browser="Internet explorer", os="Windows", image_proxy=False)


def test_the_gmail_proxy_is_not_reported_as_firefox_on_windows_xp() -> None:
    user_agent = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 "
        "(via ggpht.com GoogleImageProxy)"
    )

    assert raw_families(user_agent).os == "Windows"
    assert classify_agent(user_agent) == Agent(browser="Gmail", os="", image_proxy=True)


def test_an_unknown_agent_has_empty_names() -> None:
    assert classify_agent("something/1.0 nobody knows") == Agent("", "", False)


def test_an_empty_agent_has_empty_names() -> None:
    assert classify_agent("") == Agent("", "", False)


def test_a_10_kb_user_agent_is_classified_from_its_start() -> None:
    # Its speed is measured by bench/bench_agents.py, not asserted here.
    head = "Mozilla/5.0 (Windows NT 10.0; rv:125.0) Gecko/20100101 Firefox/125.0"
    user_agent = head + " (" + "a; " * 3400 + ")"

    agent = classify_agent(user_agent)

    assert len(user_agent) > 10_000 > MAX_PARSED_LENGTH
    assert agent.browser == "Firefox"


def test_hostile_characters_do_not_break_classification() -> None:
    user_agent = "Mozilla/5.0 \x00\udcff\u202e (Windows NT 10.0) Chrome/1.0 ☃" * 50

    assert isinstance(classify_agent(user_agent), Agent)


def test_a_repeated_agent_is_answered_from_the_cache() -> None:
    user_agent = (
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"
    )
    classify_agent(user_agent)
    hits_before = agent_cache_stats().hits

    classify_agent(user_agent)

    assert agent_cache_stats().hits == hits_before + 1


def test_distinct_huge_agents_share_one_cache_entry_per_parsed_head() -> None:
    head = "Mozilla/5.0 (X11; Linux x86_64) " + "z" * MAX_PARSED_LENGTH
    classify_agent(head + "first tail")
    size_before = agent_cache_stats().size

    classify_agent(head + "another tail")

    assert agent_cache_stats().size == size_before
