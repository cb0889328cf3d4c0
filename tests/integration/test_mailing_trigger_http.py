"""The Pega trigger webhook on the served application, with a real SMTP server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from mailing_support import (
    BRAND_ID,
    OFFER_HTML,
    OFFER_TEXT,
    PORTAL_ID,
    Sink,
    install_brand,
)
from pegabridge.installs import service as installs
from pegabridge.sandbox import SandboxEndpoint

INTERACTION_ID = "-563481321460449721"
PEGA_BODY = (
    '{"Customer": {"Id": "C-1", "Email": "ann@example.org", "FirstName": "Ann"},'
    ' "Offer": {"UniqueOfferId": "OF-2024-77", "InteractionId": -563481321460449721},'
    ' "CallId": "call-1"}'
)


@pytest.fixture
def sink(monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    server = Sink()
    server.start()
    monkeypatch.setenv("PEGABRIDGE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("PEGABRIDGE_SMTP_PORT", str(server.port))
    monkeypatch.setenv("PEGABRIDGE_RETURN_PATH_DOMAIN", "return.shop.example")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(
    sink: Sink, served: Any, sandbox: SandboxEndpoint
) -> AsyncIterator[httpx.AsyncClient]:
    runtime = served.app.state.runtime
    await install_brand(runtime, sandbox)
    key = await runtime.committer.run(
        lambda c: installs.create_api_key(c, PORTAL_ID, "mailing tests")
    )
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=served.base_url, headers=headers, timeout=20
    ) as client:
        yield client


async def _offer_trigger(api: httpx.AsyncClient) -> dict[str, Any]:
    content = await api.post(
        f"/api/v1/brands/{BRAND_ID}/contents",
        json={
            "name": "Offer",
            "subject": "Offer {{ UniqueOfferId }} for {{ customer.first_name }}",
            "html": OFFER_HTML,
            "text": OFFER_TEXT,
            "variables": {"UniqueOfferId": "none", "InteractionId": "0"},
        },
    )
    assert content.status_code == 201, content.text
    trigger = await api.post(
        f"/api/v1/brands/{BRAND_ID}/triggers",
        json={
            "name": "next-best-offer",
            "content_id": content.json()["id"],
            "customer_key": "external_id",
            "customer": {
                "external_id": "$.Customer.Id",
                "email": "$.Customer.Email",
                "first_name": "$.Customer.FirstName",
            },
            "variables": {
                "UniqueOfferId": "$.Offer.UniqueOfferId",
                "InteractionId": "$.Offer.InteractionId",
            },
            "dedupe_path": "$.CallId",
        },
    )
    assert trigger.status_code == 201, trigger.text
    document: dict[str, Any] = trigger.json()
    return document


async def _call(base_url: str, trigger: dict[str, Any], body: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as pega:
        return await pega.post(
            f"/api/v1/triggers/{trigger['name']}",
            content=body,
            headers={
                "authorization": f"Bearer {trigger['secret']}",
                "content-type": "application/json",
            },
        )


async def test_a_pega_call_sends_an_email_with_the_decision_and_a_broadcast_event(
    api: httpx.AsyncClient, served: Any, sink: Sink, sandbox: SandboxEndpoint
) -> None:
    trigger = await _offer_trigger(api)

    answer = await _call(served.base_url, trigger, PEGA_BODY)
    [received] = await sink.wait_for(1)
    await sandbox.wait_for(1)

    message = received.parsed()
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    event = sandbox.received[0].json()
    assert answer.status_code == 201, answer.text
    assert f'content="{INTERACTION_ID}"' in html and "/t/c/" in html
    assert message["Subject"] == "Offer OF-2024-77 for Ann"
    assert event["broadcast_manual_options"] == {
        "UniqueOfferId": "OF-2024-77",
        "InteractionId": INTERACTION_ID,
    }


async def test_the_email_carries_unsubscribe_return_path_and_broadcast_headers(
    api: httpx.AsyncClient, served: Any, sink: Sink
) -> None:
    trigger = await _offer_trigger(api)

    await _call(served.base_url, trigger, PEGA_BODY)
    [received] = await sink.wait_for(1)

    message = received.parsed()
    token = message["X-Pegabridge-Broadcast"]
    assert received.sender == f"bounce+{token}@return.shop.example"
    public = served.app.state.runtime.settings.public_base_url
    assert message["List-Unsubscribe"].startswith(f"<{public}/t/u/")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


async def test_a_repeated_call_with_the_same_dedupe_value_sends_once(
    api: httpx.AsyncClient, served: Any, sink: Sink
) -> None:
    trigger = await _offer_trigger(api)

    first = await _call(served.base_url, trigger, PEGA_BODY)
    again = await _call(served.base_url, trigger, PEGA_BODY)

    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["broadcast_id"] == first.json()["broadcast_id"]
    assert len(sink.handler.received) == 1


async def test_a_body_without_the_customer_field_is_refused_and_nothing_is_sent(
    api: httpx.AsyncClient, served: Any, sink: Sink
) -> None:
    trigger = await _offer_trigger(api)
    body = json.loads(PEGA_BODY)
    del body["Customer"]["Id"]

    answer = await _call(served.base_url, trigger, json.dumps(body))

    assert answer.status_code == 422
    assert "$.Customer.Id" in answer.json()["error"]
    assert sink.handler.received == []


async def test_a_body_nested_past_what_json_can_read_is_refused_not_a_500(
    api: httpx.AsyncClient, served: Any, sink: Sink
) -> None:
    trigger = await _offer_trigger(api)
    depth = 100_000

    answer = await _call(served.base_url, trigger, "[" * depth + "]" * depth)

    assert answer.status_code == 422
    assert answer.json()["field"] == "body"
    assert sink.handler.received == []


async def test_a_wrong_secret_is_refused(
    api: httpx.AsyncClient, served: Any, sink: Sink
) -> None:
    trigger = await _offer_trigger(api)

    answer = await _call(served.base_url, {**trigger, "secret": "guess"}, PEGA_BODY)

    assert answer.status_code == 401
    assert sink.handler.received == []


async def test_an_unknown_trigger_name_is_answered_like_a_wrong_secret(
    api: httpx.AsyncClient, served: Any
) -> None:
    trigger = await _offer_trigger(api)

    wrong = await _call(served.base_url, {**trigger, "secret": "guess"}, PEGA_BODY)
    unknown = await _call(
        served.base_url, {"name": "no-such-trigger", "secret": "guess"}, PEGA_BODY
    )

    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


async def test_a_mapping_path_that_cannot_be_read_is_refused_when_saved(
    api: httpx.AsyncClient,
) -> None:
    trigger = await _offer_trigger(api)

    answer = await api.post(
        f"/api/v1/brands/{BRAND_ID}/triggers",
        json={
            "name": "broken",
            "content_id": trigger["content_id"],
            "customer_key": "external_id",
            "customer": {"external_id": "Customer..Id"},
        },
    )

    assert answer.status_code == 422
    assert "must start with '$'" in answer.json()["error"]


async def test_a_template_syntax_error_is_refused_with_its_line(
    api: httpx.AsyncClient,
) -> None:
    answer = await api.post(
        f"/api/v1/brands/{BRAND_ID}/contents",
        json={
            "name": "Broken",
            "subject": "Hi",
            "html": "<p>\n{% if customer.first_name %}\nHello\n",
        },
    )

    assert answer.status_code == 422
    assert answer.json()["problems"][0]["part"] == "html"
    assert answer.json()["problems"][0]["line"] >= 2


async def test_a_csv_import_reports_broken_rows_and_imports_the_rest(
    api: httpx.AsyncClient,
) -> None:
    csv_text = (
        "email,first_name,city\n"
        "ann@example.org,Ann,Oslo\n"
        "not-an-address,Bob,Rome\n"
        "ann@example.org,Ann again,Oslo\n"
        "cy@example.org,Cy\n"
        "dee@example.org,Dee,Lima\n"
    )

    answer = await api.post(
        f"/api/v1/brands/{BRAND_ID}/customers/import", content=csv_text
    )

    report = answer.json()
    assert report["created"] == 2
    assert [r["line"] for r in report["rejected"]] == [3, 4, 5]


async def test_a_csv_import_in_a_legacy_code_page_is_refused_naming_the_line(
    api: httpx.AsyncClient,
) -> None:
    latin1 = "email,first_name\nann@example.org,Ann\njoe@example.org,Jörg\n"

    answer = await api.post(
        f"/api/v1/brands/{BRAND_ID}/customers/import",
        content=latin1.encode("latin-1"),
    )

    assert answer.status_code == 422
    assert "line 3" in answer.json()["error"]
    found = await api.get(
        f"/api/v1/brands/{BRAND_ID}/customers", params={"email": "ann@example.org"}
    )
    assert found.status_code == 404
