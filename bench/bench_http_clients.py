"""Side by side: aiohttp and httpx posting small JSON bodies over keep-alive.

Both clients send the same events to the same receiver (``bench/receiver.py`` in its own
process) with the same concurrency, in alternating rounds so that the machine's noise
touches both alike. The ratio decides the delivery client (``delivery/client.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
import httpx

from bench.common import Receiver

BODY = json.dumps({"uuid": "", "metric": "opens", "portal_id": 1746, "brand_id": 1})


def _bodies(count: int) -> list[bytes]:
    return [
        BODY.replace('"uuid": ""', f'"uuid": "{uuid.uuid4()}"').encode()
        for _ in range(count)
    ]


async def _with_aiohttp(url: str, bodies: list[bytes], concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = list(bodies)
        started = time.perf_counter()

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url, data=body) as response:
                    await response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


async def _with_httpx(url: str, bodies: list[bytes], concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        queue = list(bodies)
        started = time.perf_counter()

        async def worker() -> None:
            while queue:
                body = queue.pop()
                response = await client.post(url, content=body)
                response.read()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(bodies) / (time.perf_counter() - started)


async def run(
    count: int = 5000, rounds: int = 3, concurrency: int = 16
) -> dict[str, float]:
    """Requests per second of each client (best of ``rounds``) and their ratio."""
    with Receiver() as receiver:
        best = {"aiohttp": 0.0, "httpx": 0.0}
        for _ in range(rounds):
            best["aiohttp"] = max(
                best["aiohttp"],
                await _with_aiohttp(receiver.url, _bodies(count), concurrency),
            )
            best["httpx"] = max(
                best["httpx"],
                await _with_httpx(receiver.url, _bodies(count), concurrency),
            )
    return {
        "aiohttp_requests_per_s": round(best["aiohttp"]),
        "httpx_requests_per_s": round(best["httpx"]),
        "aiohttp_to_httpx_ratio": round(best["aiohttp"] / best["httpx"], 2),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run()), indent=2))
