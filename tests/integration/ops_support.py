"""Helpers of the operations tests: a brand installed against the sandbox, scrapes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from pegabridge.installs import service
from pegabridge.installs.service import InstallSettings
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.web.runtime import Runtime

PORTAL_ID = 1746
BRAND_ID = 1
PASSWORD = "s3cret"


@dataclass
class Installed:
    """A brand whose installation sends to the sandbox, and an API key of its portal."""

    base_url: str
    runtime: Runtime
    sandbox: SandboxEndpoint
    api_key: str
    installation_id: int

    async def post(self, activities: list[dict[str, Any]]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            return await client.post(
                "/api/v1/activities",
                json=activities,
                headers={"Authorization": f"Bearer {self.api_key}"},
            )


async def install(served: Any, sandbox: SandboxEndpoint) -> Installed:
    """Create portal, brand, an active installation and an API key."""
    runtime: Runtime = served.app.state.runtime

    async def setup(conn: Any) -> tuple[int, str]:
        await service.create_portal(conn, PORTAL_ID, "Portal")
        await service.create_brand(conn, PORTAL_ID, BRAND_ID, "Brand One")
        inst = await service.save_installation(
            conn,
            runtime.vault,
            PORTAL_ID,
            BRAND_ID,
            InstallSettings(
                endpoint_url=sandbox.url, username="pega", password=PASSWORD
            ),
            activate=True,
        )
        return inst.id, await service.create_api_key(conn, PORTAL_ID, "tests")

    installation_id, key = await runtime.committer.run(setup)
    if runtime.delivery is not None:
        runtime.delivery.wake()
    return Installed(served.base_url, runtime, sandbox, key, installation_id)


def activity(metric: str = "opens", **fields: Any) -> dict[str, Any]:
    """A minimal activity of the brand."""
    return {
        "metric": metric,
        "metric_timestamp": 1589801661,
        "portal_id": PORTAL_ID,
        "brand_id": BRAND_ID,
        "customer_id": 13,
        **fields,
    }


Samples = dict[str, list[tuple[dict[str, str], float]]]


async def scrape(base_url: str) -> Samples:
    """Every sample of ``/metrics``, by sample name."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        answer = await client.get("/metrics")
    answer.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for found, v in samples.get(name, [])
        if all(found.get(k) == want for k, want in labels.items())
    )


async def until(
    check: Callable[[], Any], timeout_s: float = 10.0, every_s: float = 0.05
) -> Any:
    """Call ``check`` (sync or async) until it returns something true."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s} s")
        await asyncio.sleep(every_s)
