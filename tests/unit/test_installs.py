"""Installation inputs: activity choices, endpoint URLs and API key hashes."""

from __future__ import annotations

import pytest

from pegabridge.events.metrics import Activity, Metric, activity_of, parse_activities
from pegabridge.installs.service import InstallError, check_endpoint_url, hash_api_key


def test_short_links_are_sent_with_the_clicks_choice() -> None:
    assert activity_of(Metric.SHORT_LINKS) is Activity.CLICKS


def test_an_activity_list_is_read_with_short_links_as_clicks() -> None:
    chosen = parse_activities(" Opens, short_links,,bounces ")

    assert chosen == {Activity.OPENS, Activity.CLICKS, Activity.BOUNCES}


def test_an_unknown_activity_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="conversions"):
        parse_activities("opens,downloads")


@pytest.mark.parametrize(
    "url",
    [
        "https://pega.example.com/prweb/api/ih",
        "http://127.0.0.1:8900/events",
        "http://localhost/events",
        "http://[::1]:80/x",
    ],
)
def test_https_and_loopback_endpoints_are_accepted(url: str) -> None:
    assert check_endpoint_url(f"  {url} ") == url


@pytest.mark.parametrize(
    "url",
    [
        "",
        "pega.example.com",
        "ftp://pega.example.com",
        "http://pega.example.com/x",
        "https://pega example.com",
        "https://[::1/x",
        "https://pega.example.com:99999/x",
        "https://pega.example.com:port/x",
        "https://pega:s3cret@pega.example.com/x",
        "https://pega@pega.example.com/x",
    ],
)
def test_other_endpoints_are_refused_for_the_endpoint_field(url: str) -> None:
    with pytest.raises(InstallError) as caught:
        check_endpoint_url(url)

    assert caught.value.field == "endpoint_url"


def test_an_api_key_is_stored_as_a_hash_not_as_itself() -> None:
    digest = hash_api_key("pb_secret")

    assert digest != "pb_secret"
    assert len(digest) == 64
