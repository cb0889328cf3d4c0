"""The ingest API on real HTTP, with a real database and the sandbox as Pega."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from pegabridge.store.tables import outbox

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "source_examples.json"
EMPTY = {
    "string": "",
    "integer": 0,
    "boolean": False,
    "object": {},
    "array of strings": [],
    "number or null": None,
}
EVENT_TYPE_OF_SUB_TYPE = {"CAMPAIGN": "CAMPAIGNMAIL"}


def source_examples() -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = json.loads(SAMPLES.read_text(encoding="utf-8"))
    return examples


def expected_body(raw: dict[str, Any], fields: list[tuple[str, str]]) -> bytes:
    """The message the spec asks for, built from its rules (not from our code)."""
    message = {name: raw.get(name, EMPTY[json_type]) for name, json_type in fields}
    if isinstance(message.get("bounce_type"), str):
        message["bounce_type"] = message["bounce_type"].upper()
    if message["broadcast_event_type"] == "EMAIL":
        sub_type = message["sub_type"]
        message["broadcast_event_type"] = EVENT_TYPE_OF_SUB_TYPE.get(sub_type, sub_type)
    options = message["broadcast_manual_options"]
    if isinstance(options.get("InteractionId"), int):
        options["InteractionId"] = str(options["InteractionId"])
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def activity(metric: str = "opens", **fields: Any) -> dict[str, Any]:
    return {
        "metric": metric,
        "metric_timestamp": 1589801661,
        "portal_id": 1746,
        "brand_id": 1,
        **fields,
    }


async def post(app: Any, body: Any, key: str | None = None, **headers: str) -> Any:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    key = app.api_key if key is None else key
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=app.served.base_url) as client:
        return await client.post(
            "/api/v1/activities",
            content=content,
            headers={"Content-Type": "application/json", **auth, **headers},
        )


async def outbox_rows(app: Any, *where: Any) -> int:
    async with app.runtime.db.connect() as conn:
        return int(await conn.scalar(select(func.count()).where(*where)) or 0)


# --- The source's examples, end to end. ---


async def test_the_source_examples_arrive_byte_for_byte_in_the_spec_shape(
    pega_app: Any, spec_fields: dict[str, list[tuple[str, str]]]
) -> None:
    await pega_app.install()
    examples = source_examples()
    expected = {e["uuid"]: expected_body(e, spec_fields[e["metric"]]) for e in examples}

    for example in examples:
        assert (await post(pega_app, example)).status_code == 202
    received = await pega_app.sandbox.wait_for(len(examples))

    assert {json.loads(r.body)["uuid"]: r.body for r in received} == expected
    assert {r.authorization for r in received} == {
        "Basic " + base64.b64encode(b"pega:s3cret").decode()
    }
    assert {r.content_type for r in received} == {"application/json"}


async def test_an_interaction_id_handed_in_as_a_big_number_arrives_digit_for_digit(
    pega_app: Any,
) -> None:
    await pega_app.install()
    body = (
        b'{"metric":"broadcasts","metric_timestamp":1589354145,"portal_id":1746,'
        b'"brand_id":1,"broadcast_manual_options":{"InteractionId":'
        b'-563481321460449721,"UniqueOfferId":"OFFER-9"}}'
    )

    assert (await post(pega_app, body)).status_code == 202
    [received] = await pega_app.sandbox.wait_for(1)

    assert json.loads(received.body)["broadcast_manual_options"] == {
        "InteractionId": "-563481321460449721",
        "UniqueOfferId": "OFFER-9",
    }


async def test_each_event_of_an_array_and_of_ndjson_arrives_in_its_own_post(
    pega_app: Any,
) -> None:
    await pega_app.install()
    ndjson = b"\n".join(json.dumps(activity()).encode() for _ in range(2))

    first = await post(pega_app, [activity(), activity("clicks"), activity("bounces")])
    second = await post(pega_app, ndjson, **{"Content-Type": "application/x-ndjson"})
    received = await pega_app.sandbox.wait_for(5)

    uuids = [i["uuid"] for r in (first, second) for i in r.json()["items"]]
    assert sorted(json.loads(r.body)["uuid"] for r in received) == sorted(uuids)
    assert all(r.body.startswith(b"{") for r in received)


async def test_the_answer_comes_after_the_events_are_committed(pega_app: Any) -> None:
    answer = await post(pega_app, [activity() for _ in range(20)])
    uuids = [item["uuid"] for item in answer.json()["items"]]

    assert answer.status_code == 202
    assert await outbox_rows(pega_app, outbox.c.uuid.in_(uuids)) == 20


async def test_an_activity_handed_in_twice_with_its_uuid_is_recorded_once(
    pega_app: Any,
) -> None:
    await pega_app.install()
    same = activity(uuid="21f37d1f-3525-4ebf-8142-74773dc7d9cd")

    await post(pega_app, same)
    again = await post(pega_app, [same, same])
    await pega_app.sandbox.wait_for(1)
    await asyncio.sleep(0.3)

    assert [i["state"] for i in again.json()["items"]] == ["duplicate", "duplicate"]
    assert await outbox_rows(pega_app, outbox.c.uuid == same["uuid"]) == 1
    assert len(pega_app.sandbox.received) == 1


async def test_the_first_metric_ids_of_a_portal_are_numbered_per_metric(
    pega_app: Any,
) -> None:
    answer = await post(
        pega_app, [activity("opens"), activity("opens"), activity("broadcasts")]
    )
    uuids = [i["uuid"] for i in answer.json()["items"]]

    async with pega_app.runtime.db.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.uuid, outbox.c.metric_id).where(outbox.c.uuid.in_(uuids))
        )
        metric_ids = {r.uuid: r.metric_id for r in rows}

    assert [metric_ids[u] for u in uuids] == [1, 2, 0]


# --- Bad input: a clear 4xx, nothing stored. ---


async def test_malformed_json_is_answered_400(pega_app: Any) -> None:
    answer = await post(pega_app, b'{"metric": "opens",')

    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["error"]


@pytest.mark.parametrize("key", ["", "pb_wrong"])
async def test_a_missing_or_wrong_api_key_is_answered_401(
    pega_app: Any, key: str
) -> None:
    answer = await post(pega_app, activity(), key=key)

    assert answer.status_code == 401
    assert await outbox_rows(pega_app, outbox.c.id > 0) == 0


async def test_a_body_over_the_limit_is_answered_413_and_not_stored(
    pega_app: Any,
) -> None:
    pega_app.runtime.settings.max_body_bytes = 2_000

    answer = await post(pega_app, [activity() for _ in range(40)])

    assert answer.status_code == 413
    assert await outbox_rows(pega_app, outbox.c.id > 0) == 0


async def test_refused_items_are_named_with_field_and_message_and_nothing_is_stored(
    pega_app: Any,
) -> None:
    items = [activity(), activity(customer_id="13"), activity("downloads")]

    answer = await post(pega_app, items)

    assert answer.status_code == 422
    assert [
        (item["index"], [(e["field"], bool(e["message"])) for e in item["errors"]])
        for item in answer.json()["items"]
    ] == [(1, [("customer_id", True)]), (2, [("metric", True)])]
    assert await outbox_rows(pega_app, outbox.c.id > 0) == 0


async def test_an_activity_of_another_portal_is_refused_and_not_stored(
    pega_app: Any,
) -> None:
    answer = await post(pega_app, activity(portal_id=1))

    assert answer.status_code == 422
    assert await outbox_rows(pega_app, outbox.c.id > 0) == 0


# --- What is not sent is counted. ---


async def test_metrics_not_chosen_and_brands_without_the_app_are_counted_not_sent(
    pega_app: Any,
) -> None:
    await pega_app.install(activities="broadcasts,bounces")
    items = [activity("opens"), activity("opens", brand_id=2), activity("bounces")]

    answer = await post(pega_app, items)
    await pega_app.sandbox.wait_for(1)
    await asyncio.sleep(0.3)

    assert answer.json()["counts"] == {
        "skipped:not-chosen": 1,
        "skipped:no-installation": 1,
        "pending": 1,
    }
    assert await outbox_rows(pega_app, outbox.c.state == "skipped") == 2
    assert [json.loads(r.body)["metric"] for r in pega_app.sandbox.received] == [
        "bounces"
    ]


async def test_short_links_are_sent_when_clicks_are_chosen(pega_app: Any) -> None:
    await pega_app.install(activities="clicks")

    await post(pega_app, [activity("short_links"), activity("opens")])
    await pega_app.sandbox.wait_for(1)
    await asyncio.sleep(0.3)

    assert [json.loads(r.body)["metric"] for r in pega_app.sandbox.received] == [
        "short_links"
    ]


async def test_wrong_api_keys_do_not_pile_up_in_the_key_cache(pega_app: Any) -> None:
    for n in range(20):
        await post(pega_app, activity(), key=f"pb_wrong_{n}")

    assert len(pega_app.served.app.state.api_key_cache) == 0
