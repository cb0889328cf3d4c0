"""Delivery to the sandbox: at once, through outages, pauses and dead letters."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from sqlalchemy import func, select

from pegabridge.delivery import outbox
from pegabridge.installs import service
from pegabridge.sandbox import Answer, Received
from pegabridge.store.tables import delivery_attempts, installations
from pegabridge.store.tables import outbox as outbox_table


def activity(metric: str = "opens", **fields: Any) -> dict[str, Any]:
    return {
        "metric": metric,
        "metric_timestamp": 1589801661,
        "portal_id": 1746,
        "brand_id": 1,
        **fields,
    }


async def ingest(app: Any, count: int) -> list[str]:
    """Hand in ``count`` activities; their uuids."""
    async with httpx.AsyncClient(base_url=app.served.base_url) as client:
        answer = await client.post(
            "/api/v1/activities",
            json=[activity() for _ in range(count)],
            headers={"Authorization": f"Bearer {app.api_key}"},
        )
    assert answer.status_code == 202, answer.text
    return [item["uuid"] for item in answer.json()["items"]]


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 10
) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout_s} s")
        await asyncio.sleep(0.05)


async def installation(app: Any, installation_id: int) -> service.Installation:
    async with app.runtime.db.connect() as conn:
        return await service.get_installation(conn, installation_id)


async def count_in_state(app: Any, state: str) -> int:
    async with app.runtime.db.connect() as conn:
        found = await conn.scalar(
            select(func.count()).where(outbox_table.c.state == state)
        )
    return int(found or 0)


def uuids_of(received: list[Received]) -> list[str]:
    return [str(json.loads(r.body)["uuid"]) for r in received]


class Script:
    """Answers the first ``count`` requests with ``answer``, then accepts."""

    def __init__(self, count: float, answer: Answer) -> None:
        self.count = count
        self.answer = answer
        self.seen = 0

    def __call__(self, _request: Received) -> Answer | None:
        self.seen += 1
        return self.answer if self.seen <= self.count else None


async def test_a_fresh_event_is_sent_at_once_without_waiting_for_the_poller(
    pega_app: Any,
) -> None:
    await pega_app.install()
    pega_app.runtime.settings.poll_interval_s = 60.0
    await asyncio.sleep(0.2)  # the poller is now in its long wait

    started = time.monotonic()
    [uuid] = await ingest(pega_app, 1)
    received = await pega_app.sandbox.wait_for(1, timeout_s=5)

    assert uuids_of(received) == [uuid]
    assert time.monotonic() - started < 2


async def test_after_an_outage_every_event_arrives_with_its_own_uuid(
    pega_app: Any,
) -> None:
    pega_app.sandbox.responder = Script(60, (503, "down for maintenance"))
    await pega_app.install()

    uuids = await ingest(pega_app, 20)
    delivered = await pega_app.sandbox.wait_for(20, timeout_s=30)

    assert sorted(uuids_of(delivered)) == sorted(uuids)
    assert set(uuids_of(pega_app.sandbox.received)) == set(uuids)
    assert len(pega_app.sandbox.received) > 20


async def test_a_429_is_retried_no_sooner_than_its_retry_after(pega_app: Any) -> None:
    engine = pega_app.runtime.delivery
    engine.policy = dataclasses.replace(engine.policy, max_delay_s=10.0)
    pega_app.sandbox.responder = Script(1, (429, "slow down", {"Retry-After": "1"}))
    await pega_app.install()

    [uuid] = await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(1, timeout_s=10)

    first, second = pega_app.sandbox.received
    assert second.at - first.at >= 0.95
    assert uuids_of([first, second]) == [uuid, uuid]


async def test_refused_credentials_pause_until_the_right_password_is_saved(
    pega_app: Any,
) -> None:
    installation_id = await pega_app.install(password="wrong")
    uuids = await ingest(pega_app, 5)

    async def paused() -> bool:
        state = (await installation(pega_app, installation_id)).state
        return state.value == "paused"

    await eventually(paused)
    reason = (await installation(pega_app, installation_id)).pause_reason
    await asyncio.sleep(0.3)
    assert "401" in reason and "password" in reason
    assert await count_in_state(pega_app, "pending") == 5

    await pega_app.install(password="s3cret")
    delivered = await pega_app.sandbox.wait_for(5, timeout_s=10)
    assert sorted(uuids_of(delivered)) == sorted(uuids)


async def test_a_run_of_400s_pauses_the_installation(pega_app: Any) -> None:
    pega_app.sandbox.responder = Script(float("inf"), (400, "bad request"))
    installation_id = await pega_app.install()

    await ingest(pega_app, 5)

    async def paused() -> bool:
        state = (await installation(pega_app, installation_id)).state
        return state.value == "paused"

    await eventually(paused)
    assert "400" in (await installation(pega_app, installation_id)).pause_reason


async def test_a_single_400_is_retried_and_the_event_still_arrives(
    pega_app: Any,
) -> None:
    pega_app.sandbox.responder = Script(1, (400, "bad request"))
    installation_id = await pega_app.install()

    [uuid] = await ingest(pega_app, 1)
    delivered = await pega_app.sandbox.wait_for(1)

    assert uuids_of(delivered) == [uuid]
    assert (await installation(pega_app, installation_id)).state.value == "active"


async def test_an_event_past_its_retry_window_is_a_dead_letter_until_replayed(
    pega_app: Any,
) -> None:
    engine = pega_app.runtime.delivery
    engine.policy = dataclasses.replace(engine.policy, max_age_s=0.5)
    pega_app.sandbox.responder = Script(float("inf"), (503, "down"))
    await pega_app.install()

    [uuid] = await ingest(pega_app, 1)

    async def dead() -> bool:
        return await count_in_state(pega_app, "dead") == 1

    await eventually(dead)
    pega_app.sandbox.responder = None
    replayed = await pega_app.runtime.committer.run(
        lambda conn: outbox.replay_dead(conn, time.time())
    )
    engine.wake()
    delivered = await pega_app.sandbox.wait_for(1)

    assert replayed == 1
    assert uuids_of(delivered) == [uuid]
    assert set(uuids_of(pega_app.sandbox.received)) == {uuid}


async def test_every_attempt_is_logged_with_its_outcome(pega_app: Any) -> None:
    pega_app.sandbox.responder = Script(2, (503, "down"))
    await pega_app.install()

    await ingest(pega_app, 1)
    await pega_app.sandbox.wait_for(1)

    async def logged() -> list[str]:
        async with pega_app.runtime.db.connect() as conn:
            rows = await conn.execute(
                select(delivery_attempts.c.outcome).order_by(delivery_attempts.c.id)
            )
            return [r.outcome for r in rows]

    async def three_logged() -> bool:
        return len(await logged()) == 3

    await eventually(three_logged)
    assert await logged() == ["retry", "retry", "delivered"]


async def test_an_event_whose_lease_ran_out_in_memory_is_released_not_sent(
    pega_app: Any,
) -> None:
    await pega_app.install()
    await asyncio.sleep(0.3)  # the poller has made the installation's lane
    pega_app.runtime.settings.poll_interval_s = 60.0
    await asyncio.sleep(0.2)
    engine = pega_app.runtime.delivery
    [lane_id] = engine.lane_stats()
    now = time.time()
    event_uuid = "0b5d7a8e-9f3c-4d21-8a6b-5c4e3f2a1b0d"

    async def write(conn: Any) -> None:
        await conn.execute(
            outbox_table.insert().values(
                uuid=event_uuid,
                portal_id=1746,
                brand_id=1,
                installation_id=lane_id,
                metric="opens",
                metric_id=1,
                payload="{}",
                state="pending",
                created_at=now,
                next_attempt_at=now,
                leased_by=engine.node,
                lease_until=now - 1,
            )
        )

    await pega_app.runtime.committer.run(write)
    engine.offer(
        lane_id, [outbox.Leased(event_uuid, lane_id, "{}", 0, now, None, now - 1)]
    )

    async def released() -> bool:
        async with pega_app.runtime.db.connect() as conn:
            holder = await conn.scalar(
                select(outbox_table.c.leased_by).where(
                    outbox_table.c.uuid == event_uuid
                )
            )
        return holder is None

    await eventually(released, timeout_s=5)
    assert pega_app.sandbox.received == []


async def test_a_retry_after_that_is_no_number_does_not_stop_the_lane(
    pega_app: Any,
) -> None:
    # More such answers than the lane has workers: each one used to end a worker.
    busy = (503, "busy", {"Retry-After": "²"})
    pega_app.sandbox.responder = Script(20, busy)
    await pega_app.install()

    uuids = await ingest(pega_app, 20)
    delivered = await pega_app.sandbox.wait_for(20, timeout_s=20)

    assert sorted(uuids_of(delivered)) == sorted(uuids)


async def test_an_endpoint_url_the_client_cannot_send_to_is_retried_with_a_reason(
    pega_app: Any,
) -> None:
    installation_id = await pega_app.install()
    # Saved before such URLs were refused, or written by hand into the database.
    with_credentials = pega_app.sandbox.url.replace("://", "://pega:s3cret@")

    async def write(conn: Any) -> None:
        await conn.execute(
            installations.update()
            .where(installations.c.id == installation_id)
            .values(
                endpoint_url=with_credentials,
                config_version=installations.c.config_version + 1,
            )
        )

    await pega_app.runtime.committer.run(write)
    pega_app.runtime.delivery.wake()
    await asyncio.sleep(0.5)  # the poller has rebuilt the lane with the new URL
    [uuid] = await ingest(pega_app, 1)

    async def last_error() -> str:
        async with pega_app.runtime.db.connect() as conn:
            found = await conn.scalar(
                select(outbox_table.c.last_error).where(outbox_table.c.uuid == uuid)
            )
        return str(found or "")

    async def attempted() -> bool:
        return bool(await last_error())

    await eventually(attempted)
    assert "could not be built" in await last_error()


async def test_a_redirect_is_retried_not_followed_to_a_page_that_answers_200(
    pega_app: Any,
) -> None:
    # The sandbox answers a GET with 200, as a sign-in page behind a redirect would.
    pega_app.sandbox.responder = Script(1, (302, "", {"Location": "/signin"}))
    await pega_app.install()

    [uuid] = await ingest(pega_app, 1)
    delivered = await pega_app.sandbox.wait_for(1, timeout_s=10)

    assert uuids_of(delivered) == [uuid]
    assert [r.status for r in pega_app.sandbox.received] == [302, 200]
