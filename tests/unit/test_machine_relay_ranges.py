"""Apple relay ranges: loading, lookups, configuration and the atomic refresh."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import httpx
import pytest

from pegabridge.tracking.relay_ranges import (
    RANGES_PATH_ENV,
    AddressRanges,
    RelayRangesError,
    load_configured_ranges,
    load_ranges,
    parse_ranges,
    refresh_ranges_file,
)

SAMPLE = Path(__file__).parent.parent / "samples" / "tracking" / "relay-ranges.txt"
SHARED_DATA_DIR = Path(
    os.environ.get("PEGABRIDGE_SHARED_DATA_DIR", "/work/shared/data")
)
APPLE_LIST = SHARED_DATA_DIR / "apple-private-relay-ipv4-ranges.txt"
FEED_URL = "https://feed.example/egress-ip-ranges.csv"


def apple_list() -> Path:
    if not APPLE_LIST.is_file():
        pytest.skip(
            f"Apple relay list {APPLE_LIST} is absent (PEGABRIDGE_SHARED_DATA_DIR)"
        )
    return APPLE_LIST


def serving(body: str, status: int = 200) -> httpx.Client:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text=body))
    return httpx.Client(transport=transport)


@pytest.mark.parametrize(
    "address",
    ["104.28.28.0", "104.28.28.63", "104.28.28.70", "104.28.28.76", "172.224.226.40"],
)
def test_addresses_inside_sample_networks_are_found(address: str) -> None:
    assert load_ranges(SAMPLE).contains(address)


@pytest.mark.parametrize(
    "address",
    ["104.28.28.72", "104.28.28.77", "172.224.226.64", "8.8.8.8", "::1", "", "x"],
)
def test_addresses_outside_sample_networks_are_not_found(address: str) -> None:
    assert not load_ranges(SAMPLE).contains(address)


def test_csv_lines_with_ipv6_networks_are_read_by_their_first_column() -> None:
    ranges = load_ranges(SAMPLE)

    assert ranges.contains("146.75.169.12")
    assert ranges.contains("2a02:26f7:b3c0:4000:ffff::1")


def test_an_ipv4_mapped_ipv6_address_is_looked_up_as_ipv4() -> None:
    assert load_ranges(SAMPLE).contains("::ffff:104.28.28.76")


def test_overlapping_and_adjacent_blocks_merge_into_one_interval() -> None:
    ranges = parse_ranges("10.0.0.0/25\n10.0.0.128/25\n10.0.0.64/26\n")

    assert len(ranges) == 1
    assert ranges.networks() == [ipaddress.ip_network("10.0.0.0/24")]


def test_a_line_that_is_not_a_network_is_refused_with_its_line_number() -> None:
    with pytest.raises(RelayRangesError, match=r"list.txt:2: 'banana'"):
        parse_ranges("10.0.0.0/8\nbanana\n", source="list.txt")


def test_apples_list_loads_and_finds_a_single_address_entry() -> None:
    # How fast it loads is measured by bench/bench_agents.py, not asserted here.
    ranges = load_ranges(apple_list())

    assert ranges.contains("104.28.28.76")


def test_every_entry_of_apples_list_is_found_at_both_ends() -> None:
    path = apple_list()
    ranges = load_ranges(path)
    entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]

    missing = []
    for entry in entries:
        network = ipaddress.ip_network(entry, strict=False)
        for address in (network.network_address, network.broadcast_address):
            if not ranges.contains(str(address)):
                missing.append(str(address))

    assert len(entries) > 3000
    assert missing == []


def test_apples_list_has_no_address_in_apples_own_network() -> None:
    ranges = load_ranges(apple_list())

    assert not ranges.contains("17.253.144.10")


def test_without_configuration_the_rule_is_off_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        ranges = load_configured_ranges({})

    assert ranges is None
    assert [getattr(r, "event", "") for r in caplog.records] == ["relay_ranges.off"]
    assert "agents refresh-ranges" in caplog.records[0].fix


def test_a_configured_path_without_a_file_switches_the_rule_off(tmp_path: Path) -> None:
    ranges = load_configured_ranges({RANGES_PATH_ENV: str(tmp_path / "missing.txt")})

    assert ranges is None


def test_a_configured_file_is_loaded() -> None:
    ranges = load_configured_ranges({RANGES_PATH_ENV: str(SAMPLE)})

    assert isinstance(ranges, AddressRanges)
    assert ranges.contains("104.28.28.76")


def test_refresh_replaces_the_file_with_the_published_list(tmp_path: Path) -> None:
    target = tmp_path / "relay.txt"
    target.write_text("1.2.3.4\n")
    feed = "172.224.226.0/27,GB,GB-EN,London\n2a02:26f7::/32,GB,GB-EN,London\n"

    refresh_ranges_file(target, FEED_URL, client=serving(feed))

    reloaded = load_ranges(target)
    assert reloaded.contains("172.224.226.5")
    assert not reloaded.contains("1.2.3.4")
    assert [path.name for path in tmp_path.iterdir()] == ["relay.txt"]


def test_a_failed_download_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "relay.txt"
    target.write_text("1.2.3.4\n")

    with pytest.raises(RelayRangesError, match="cannot fetch"):
        refresh_ranges_file(target, FEED_URL, client=serving("gone", status=503))

    assert target.read_text() == "1.2.3.4\n"


def test_an_empty_or_garbled_download_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "relay.txt"
    target.write_text("1.2.3.4\n")

    for body in ("", "<html>maintenance</html>"):
        with pytest.raises(RelayRangesError):
            refresh_ranges_file(target, FEED_URL, client=serving(body))

    assert target.read_text() == "1.2.3.4\n"
