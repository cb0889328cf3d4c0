"""Reading handed-in activities: the source's variants accepted, the rest refused."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from pegabridge.events.ingest import (
    ActivityRefused,
    BodyError,
    accept_activity,
    parse_body,
)

UUID = "21f37d1f-3525-4ebf-8142-74773dc7d9cd"


def activity(metric: str = "opens", **fields: Any) -> dict[str, Any]:
    return {
        "uuid": UUID,
        "metric": metric,
        "metric_timestamp": 1589801661,
        "portal_id": 1746,
        "brand_id": 1,
        **fields,
    }


def sent(raw: dict[str, Any], portal_id: int | None = 1746) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        accept_activity(raw, portal_id).event.to_json()
    )
    return document


def refused_fields(raw: Any, portal_id: int | None = 1746) -> list[str]:
    with pytest.raises(ActivityRefused) as caught:
        accept_activity(raw, portal_id)
    return [error.field for error in caught.value.errors]


# --- The source's own variants. ---


@pytest.mark.parametrize("written", ["hard", "Hard", "HARD"])
def test_a_bounce_type_in_any_case_is_sent_upper_case(written: str) -> None:
    assert sent(activity("bounces", bounce_type=written))["bounce_type"] == "HARD"


@pytest.mark.parametrize(
    ("sub_type", "event_type"),
    [
        ("CAMPAIGN", "CAMPAIGNMAIL"),
        ("SINGLEMAIL", "SINGLEMAIL"),
        ("QUICKMAIL", "QUICKMAIL"),
    ],
)
def test_the_event_type_email_becomes_the_word_of_its_sub_type(
    sub_type: str, event_type: str
) -> None:
    raw = activity(broadcast_event_type="EMAIL", sub_type=sub_type)

    message = sent(raw)

    assert (message["broadcast_event_type"], message["sub_type"]) == (
        event_type,
        sub_type,
    )


def test_missing_basic_fields_get_their_empty_values() -> None:
    message = sent(activity("unsubscribes"))

    assert (
        message["brand_name"],
        message["customer_id"],
        message["test_mailing"],
        message["broadcast_manual_options"],
    ) == ("", 0, False, {})


def test_a_click_without_machine_generated_and_tags_gets_false_and_empty_list() -> None:
    message = sent(activity("clicks", url="https://example.com/"))

    assert (message["machine_generated"], message["tags"]) == (False, [])


def test_an_interaction_id_sent_as_a_big_number_keeps_every_digit_as_text() -> None:
    body = (
        b'{"metric":"broadcasts","metric_timestamp":1,"portal_id":1746,"brand_id":1,'
        b'"broadcast_manual_options":{"InteractionId":-563481321460449721,'
        b'"UniqueOfferId":"OF-1"}}'
    )
    [raw] = parse_body(body, "application/json")

    payload = accept_activity(raw, 1746).event.to_json()

    assert '"InteractionId":"-563481321460449721"' in payload


def test_an_interaction_id_beyond_64_bits_keeps_every_digit_too() -> None:
    [raw] = parse_body(
        b'{"metric":"opens","metric_timestamp":1,"portal_id":1,"brand_id":1,'
        b'"broadcast_manual_options":{"InteractionId":123456789012345678901234567}}'
    )

    payload = accept_activity(raw, None).event.to_json()

    assert '"InteractionId":"123456789012345678901234567"' in payload


def test_a_handed_in_uuid_and_metric_id_are_kept() -> None:
    accepted = accept_activity(activity(metric_id=691), 1746)

    assert (accepted.event.uuid, accepted.event.metric_id) == (UUID, 691)
    assert accepted.has_metric_id


def test_an_activity_without_uuid_gets_a_fresh_version_4_uuid() -> None:
    raw = activity()
    del raw["uuid"]

    made = accept_activity(raw, 1746).event.uuid

    assert uuid.UUID(made).version == 4


def test_an_upper_case_uuid_is_kept_in_its_canonical_lower_case_form() -> None:
    assert sent(activity(uuid=UUID.upper()))["uuid"] == UUID


# --- Refusals. ---


def test_a_wrong_type_is_refused_naming_the_field() -> None:
    assert refused_fields(activity(customer_id="13")) == ["customer_id"]


def test_a_timestamp_with_a_fraction_is_refused() -> None:
    assert refused_fields(activity(metric_timestamp=1589801661.5)) == [
        "metric_timestamp"
    ]


def test_an_unknown_metric_is_refused() -> None:
    assert refused_fields(activity("downloads")) == ["metric"]


def test_a_metric_that_is_not_text_is_refused_not_crashed() -> None:
    assert refused_fields(activity(["opens"])) == ["metric"]


@pytest.mark.parametrize(
    "missing", ["metric", "metric_timestamp", "portal_id", "brand_id"]
)
def test_an_activity_without_a_required_field_is_refused(missing: str) -> None:
    raw = activity()
    del raw[missing]

    assert missing in refused_fields(raw)


def test_an_activity_of_another_portal_than_the_key_is_refused() -> None:
    assert refused_fields(activity(portal_id=9999)) == ["portal_id"]


def test_a_field_of_another_metric_is_refused_as_not_of_this_metric() -> None:
    with pytest.raises(ActivityRefused) as caught:
        accept_activity(activity("opens", bounce_type="HARD"), 1746)

    [error] = caught.value.errors
    assert (error.field, error.message) == (
        "bounce_type",
        "not a field of opens events",
    )


def test_an_unknown_bounce_type_is_refused() -> None:
    assert refused_fields(activity("bounces", bounce_type="medium")) == ["bounce_type"]


def test_a_broadcast_with_a_metric_id_other_than_zero_is_refused() -> None:
    assert refused_fields(activity("broadcasts", metric_id=5)) == ["metric_id"]


def test_something_that_is_not_an_object_is_refused() -> None:
    assert refused_fields(["opens"]) == [""]


def test_a_uuid_that_is_not_a_uuid_is_refused_with_an_example() -> None:
    with pytest.raises(ActivityRefused) as caught:
        accept_activity(activity(uuid="not-a-uuid"), 1746)

    assert "21f37d1f" in caught.value.errors[0].message


# --- Bodies: one object, an array, or NDJSON. ---


def test_a_body_holds_one_object_an_array_or_ndjson_lines() -> None:
    one = json.dumps(activity()).encode()
    array = json.dumps([activity(), activity()]).encode()
    lines = one + b"\n" + one + b"\n"

    counts = [len(parse_body(one)), len(parse_body(array)), len(parse_body(lines))]

    assert counts == [1, 2, 2]


def test_ndjson_is_read_by_its_content_type_even_as_one_line() -> None:
    assert len(parse_body(json.dumps(activity()).encode(), "application/x-ndjson")) == 1


@pytest.mark.parametrize(
    "body", [b"", b"   ", b"{", b'{"metric": "opens"}\n{"metric":', b"\xff\xfe{}"]
)
def test_a_body_that_is_not_json_is_refused(body: bytes) -> None:
    with pytest.raises(BodyError):
        parse_body(body, "application/json")


def test_a_portal_id_written_as_text_is_refused_for_its_type() -> None:
    with pytest.raises(ActivityRefused) as caught:
        accept_activity(activity(portal_id="1746"), 1746)

    [error] = caught.value.errors
    assert error.field == "portal_id"
    assert "belongs to portal" not in error.message


@pytest.mark.parametrize(
    "fields",
    [
        {"brand_id": 2**63},
        {"customer_id": 10**30},
        {"metric_timestamp": 10**26},
    ],
)
def test_a_number_beyond_64_bits_is_refused_not_left_to_the_database(
    fields: dict[str, Any],
) -> None:
    assert refused_fields(activity(**fields)) == list(fields)


def test_the_largest_64_bit_identifier_is_still_accepted() -> None:
    assert sent(activity(customer_id=2**63 - 1))["customer_id"] == 2**63 - 1


@pytest.mark.parametrize(
    "body",
    [
        b'{"metric": "opens", "subject": "\\ud800"}',
        b'{"metric": "opens", "subject": "a\\uDFFFb"}',
        b'[{"metric": "opens"}, {"metric": "opens", "subject": "\\udbff"}]',
    ],
)
def test_a_lone_surrogate_escape_is_refused_as_not_text(body: bytes) -> None:
    with pytest.raises(BodyError, match="surrogate"):
        parse_body(body, "application/json")


def test_a_paired_surrogate_escape_is_an_ordinary_character() -> None:
    [document] = parse_body(b'{"subject": "\\ud83d\\ude00"}', "application/json")

    assert document["subject"] == "\N{GRINNING FACE}"


def test_a_body_nested_too_deeply_is_refused_not_crashed() -> None:
    with pytest.raises(BodyError, match="nested"):
        parse_body(b"[" * 100_000 + b"]" * 100_000, "application/json")
