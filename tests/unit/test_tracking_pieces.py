"""Tracking without HTTP: conversion fields, stable uuids, URLs, building events."""

from __future__ import annotations

import uuid

import pytest

from pegabridge.events.models import ClickEvent, OpenEvent
from pegabridge.tracking.conversions import ConversionError, parse_conversion
from pegabridge.tracking.hits import HitKind, HitRow, stable_uuid
from pegabridge.tracking.machine import PriorClick
from pegabridge.tracking.records import BroadcastRecord, TtlCache, seconds_since_send
from pegabridge.tracking.service import (
    RecentClicks,
    _safe_destination,
    build_event,
    mask_address,
)
from pegabridge.tracking.tokens import KeyRing, TokenKind, TokenPayload
from pegabridge.tracking.urls import TrackingUrls, key_ring_for

SECRET = b"a derived secret of 32 bytes...."
BROADCAST = BroadcastRecord(
    id=90,
    portal_id=4,
    brand_id=2,
    customer_id=17,
    content_id=5,
    sent_at=1_700_000_000.0,
    context={
        "portal_id": 999,
        "brand_name": "Acme",
        "subject": "Hello",
        "broadcast_timestamp": 1_700_000_000,
        "broadcast_manual_options": {"InteractionId": "-5634"},
        "not_a_field": "dropped",
    },
)


# --- Conversion fields. ---


def test_a_conversion_value_given_as_text_becomes_a_number() -> None:
    conversion = parse_conversion("order", "49.90", "eur", " A-1 ")

    assert (conversion.value, conversion.currency, conversion.reference) == (
        49.9,
        "EUR",
        "A-1",
    )


def test_a_whole_conversion_value_stays_an_integer() -> None:
    assert parse_conversion("order", "120").value == 120


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"value": "lots"}, "value"),
        ({"value": "nan"}, "value"),
        ({"value": "1e400"}, "value"),
        ({"value": True}, "value"),
        ({"value": "9" * 5000}, "value"),
        ({"value": "10", "currency": "euro"}, "currency"),
        ({"currency": "EUR"}, "currency"),
        ({"name": "x" * 201}, "name"),
        ({"reference": "a\r\nb"}, "reference"),
    ],
)
def test_a_conversion_field_that_does_not_fit_is_named(
    fields: dict[str, object], bad_field: str
) -> None:
    with pytest.raises(ConversionError) as raised:
        parse_conversion(**fields)  # type: ignore[arg-type]

    assert raised.value.field == bad_field


# --- Stable uuids and hit rows. ---


def test_a_stable_uuid_is_the_same_for_the_same_activity() -> None:
    first = stable_uuid(SECRET, "unsubscribe", 4, 90)

    assert first == stable_uuid(SECRET, "unsubscribe", 4, 90)
    assert uuid.UUID(first).version == 4


def test_a_stable_uuid_differs_per_broadcast_and_per_secret() -> None:
    one = stable_uuid(SECRET, "unsubscribe", 4, 90)

    assert one != stable_uuid(SECRET, "unsubscribe", 4, 91)
    assert one != stable_uuid(b"another secret of 32 bytes......", "unsubscribe", 4, 90)


def test_a_hit_row_cuts_long_text_to_its_columns() -> None:
    row = HitRow(
        4, 90, HitKind.CLICK, 1.0, user_agent="x" * 20_000, machine_reason="r" * 100
    )

    values = row.values()
    assert (len(values["user_agent"]), len(values["machine_reason"])) == (4096, 64)
    assert values["kind"] == "click"


# --- URLs and keys. ---


def test_urls_carry_tokens_the_same_ring_verifies() -> None:
    urls = TrackingUrls("https://t.example.com/", key_ring_for("", SECRET))

    url = urls.click_url(4, 90, 3)
    token = url.removeprefix("https://t.example.com/t/c/")
    assert urls.ring.verify(token) == TokenPayload(TokenKind.CLICK, 4, 90, 3)


def test_configured_tracking_keys_win_over_the_derived_secret() -> None:
    configured = f"7:{KeyRing.new_secret()}"

    assert key_ring_for(configured, SECRET).signing_key_id == 7
    assert key_ring_for("", SECRET).signing_key_id == 0


# --- Building events from the broadcast context. ---


def test_an_event_takes_the_context_and_the_row_ids() -> None:
    event = build_event(OpenEvent, BROADCAST, 1_700_000_500.7, browser="Outlook")

    assert (event.portal_id, event.brand_name, event.subject) == (4, "Acme", "Hello")
    assert (event.metric, event.metric_timestamp, event.customer_id) == (
        "opens",
        1_700_000_500,
        17,
    )


def test_a_context_that_does_not_fit_falls_back_to_the_row_ids() -> None:
    broken = BroadcastRecord(
        id=90,
        portal_id=4,
        brand_id=2,
        customer_id=17,
        content_id=5,
        sent_at=None,
        context={"subject": ["not", "text"]},
    )

    event = build_event(ClickEvent, broken, 10.0, link_id=3)
    assert (event.subject, event.broadcast_id, event.link_id) == ("", 90, 3)  # type: ignore[attr-defined]


def test_seconds_since_send_uses_the_context_when_the_row_has_no_time() -> None:
    unsent = BroadcastRecord(90, 4, 2, 17, 5, None, {"broadcast_timestamp": 100})

    assert seconds_since_send(160.0, unsent) == 60.0
    assert seconds_since_send(160.0, BroadcastRecord(90, 4, 2, 17, 5, None)) is None


# --- Small helpers. ---


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://example.com/ä?q=1#x", True),
        ("mailto:jane@example.com", True),
        ("https://example.com/\r\nSet-Cookie: a=b", False),
        ("https://example.com/\x00", False),
        (" JavaScript:alert(1)", False),
        ("data:text/html,hi", False),
        ("", False),
    ],
)
def test_only_safe_destinations_are_redirected_to(url: str, safe: bool) -> None:
    assert _safe_destination(url) is safe


def test_an_address_is_masked_on_the_unsubscribe_page() -> None:
    assert mask_address("jane.doe@example.com") == "j*******@example.com"
    assert mask_address("not an address") == ""


def test_recent_clicks_of_this_process_join_the_committed_ones_once() -> None:
    recent = RecentClicks()
    recent.remember(BROADCAST, 1, 1_700_000_100.0)
    recent.remember(BROADCAST, 2, 1_700_000_100.5)

    merged = recent.merged(BROADCAST, [PriorClick(1, 100.0)], since=1_700_000_090.0)
    assert sorted((c.link_id, c.seconds_since_send) for c in merged) == [
        (1, 100.0),
        (2, 100.5),
    ]


def test_the_cache_forgets_expired_and_least_used_entries() -> None:
    cache: TtlCache[int, str] = TtlCache(ttl_s=0.0, size=2)
    cache.put(1, "one")
    assert cache.get(1) is None

    lasting: TtlCache[int, str] = TtlCache(ttl_s=60.0, size=2)
    for key in (1, 2, 3):
        lasting.put(key, str(key))
    assert (lasting.get(1), lasting.get(3)) == (None, "3")
