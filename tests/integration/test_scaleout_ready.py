"""While the database refuses connections the service says 503, then recovers alone."""

from __future__ import annotations

import asyncio
import os

import asyncpg
import httpx
import pytest

from pegabridge.config import Settings

PG_ADMIN_DSN = os.environ.get(
    "PEGABRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)


async def _admin(*statements: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _refuse_connections(name: str) -> None:
    await _admin(
        f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false',
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}'",
    )


async def _ready_again(client: httpx.AsyncClient, timeout_s: float) -> int:
    status = 0
    for _ in range(int(timeout_s / 0.1)):
        status = (await client.get("/readyz")).status_code
        if status == 200:
            break
        await asyncio.sleep(0.1)
    return status


@pytest.mark.postgres
async def test_service_answers_503_while_the_database_is_lost_and_recovers(
    served: object, settings: Settings
) -> None:
    url = settings.resolved_database_url()
    if not url.startswith("postgresql"):
        pytest.skip("a lost server connection is PostgreSQL's case")
    name = url.rsplit("/", 1)[1]
    base_url = served.base_url  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=base_url, timeout=15) as client:
        await _ready_again(client, 10)
        await _refuse_connections(name)
        try:
            ready = await client.get("/readyz")
            api = await client.post(
                "/api/v1/activities", headers={"Authorization": "Bearer pb_unknown"}
            )
        finally:
            await _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        recovered = await _ready_again(client, 15)

    assert ready.status_code == 503
    assert (api.status_code, api.headers.get("retry-after")) == (503, "5")
    assert recovered == 200
