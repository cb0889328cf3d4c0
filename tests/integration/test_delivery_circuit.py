"""An outage long enough to open the circuit: probes, then the whole backlog."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from pegabridge.config import Settings
from pegabridge.sandbox import Answer, Received


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with a circuit that opens after three failures."""
    settings.circuit_threshold = 3
    settings.circuit_probe_s = 0.1
    return settings


class DownFor:
    """Answers 503 until ``seconds`` have passed, then accepts."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds

    def __call__(self, _request: Received) -> Answer | None:
        return (503, "outage") if time.monotonic() < self.until else None


async def test_after_an_outage_that_opened_the_circuit_every_event_arrives(
    pega_app: Any,
) -> None:
    await pega_app.install()
    pega_app.sandbox.responder = DownFor(1.5)
    events = [
        {"metric": "opens", "metric_timestamp": 1, "portal_id": 1746, "brand_id": 1}
        for _ in range(30)
    ]

    async with httpx.AsyncClient(base_url=pega_app.served.base_url) as client:
        answer = await client.post(
            "/api/v1/activities",
            json=events,
            headers={"Authorization": f"Bearer {pega_app.api_key}"},
        )
    delivered = await pega_app.sandbox.wait_for(30, timeout_s=30)

    uuids = sorted(i["uuid"] for i in answer.json()["items"])
    assert sorted(json.loads(r.body)["uuid"] for r in delivered) == uuids
    assert pega_app.runtime.delivery.lane_stats()[1]["circuit_open"] is False
