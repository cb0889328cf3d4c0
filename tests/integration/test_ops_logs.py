"""The log of a full delivery cycle, read back as JSON lines."""

from __future__ import annotations

import base64
import io
import json
import logging
from typing import Any

import httpx
from ops_support import PASSWORD, activity, install, until

from pegabridge.sandbox import SandboxEndpoint


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line]


async def full_cycle(served: Any, sandbox: SandboxEndpoint) -> tuple[str, str]:
    """Install, hand in events, one refused attempt, delivery; (api key, request id)."""
    brand = await install(served, sandbox)
    answers = iter([(503, '{"error":"busy"}')])
    sandbox.responder = lambda _request: next(answers, None)

    answer = await brand.post([activity("opens"), activity("clicks")])
    await sandbox.wait_for(2)
    async with httpx.AsyncClient(base_url=served.base_url) as client:
        await client.get("/readyz")
    await until(
        lambda: brand.runtime.delivery and brand.runtime.delivery.delivered >= 2
    )
    return brand.api_key, answer.headers["x-request-id"]


async def test_a_delivery_cycle_logs_its_stable_event_keys(
    served: Any, sandbox: SandboxEndpoint, captured: io.StringIO
) -> None:
    await full_cycle(served, sandbox)

    events = {line.get("event") for line in lines_of(captured)}

    assert {"http.request", "delivery.retry_scheduled"} <= events


async def test_the_lines_of_a_request_carry_its_request_id(
    served: Any, sandbox: SandboxEndpoint, captured: io.StringIO
) -> None:
    _key, request_id = await full_cycle(served, sandbox)

    [line] = [
        line
        for line in lines_of(captured)
        if line.get("event") == "http.request" and line.get("method") == "POST"
    ]

    assert line["request_id"] == request_id
    assert line["route"] == "/api/v1/activities"


async def test_no_password_api_key_or_authorization_value_is_ever_logged(
    served: Any, sandbox: SandboxEndpoint, captured: io.StringIO
) -> None:
    api_key, _id = await full_cycle(served, sandbox)
    basic = base64.b64encode(f"pega:{PASSWORD}".encode()).decode()

    text = captured.getvalue()

    assert text.strip()
    assert PASSWORD not in text
    assert api_key not in text and basic not in text


def test_credentials_passed_by_mistake_are_masked_in_message_and_fields(
    captured: io.StringIO,
) -> None:
    key = "pb_" + "A" * 43
    logging.getLogger("pegabridge.test").warning(
        "answer was %s",
        "Authorization: Basic cGVnYTpzM2NyZXQ=",
        extra={
            "event": "test.leak",
            "endpoint": "https://pega:s3cret@pega.example.com/x",
            "api_key": key,
            "detail": f"key {key}",
        },
    )

    [line] = lines_of(captured)

    assert "cGVnYTpzM2NyZXQ=" not in line["msg"]
    assert line["endpoint"] == "https://***@pega.example.com/x"
    assert key not in json.dumps(line)
