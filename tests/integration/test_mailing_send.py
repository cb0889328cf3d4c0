"""A single send through a real SMTP server on loopback, and its broadcasts event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mailing_support import (
    BRAND_ID,
    OFFER_HTML,
    OFFER_TEXT,
    PORTAL_ID,
    Sink,
    install_brand,
)
from pegabridge.config import Settings
from pegabridge.mailing.contents import ContentInput, create_content
from pegabridge.mailing.customers import (
    CustomerInput,
    create_customer,
    get_customer,
    not_mailable_reason,
)
from pegabridge.mailing.errors import SendFailed
from pegabridge.mailing.sends import SendSpec
from pegabridge.mailing.service import Mailing
from pegabridge.mailing.settings import MailSettings
from pegabridge.mailing.transport import TransportError
from pegabridge.metrics import REGISTRY
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.web.runtime import Runtime

INTERACTION_ID = "-563481321460449721"


@pytest.fixture
def sink() -> Iterator[Sink]:
    server = Sink()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def mailing(
    settings: Settings, sandbox: SandboxEndpoint, sink: Sink
) -> AsyncIterator[tuple[Runtime, Mailing]]:
    runtime = await Runtime.open(settings)
    await install_brand(runtime, sandbox)
    mail = MailSettings(
        smtp_host="127.0.0.1",
        smtp_port=sink.port,
        mail_from="Shop <news@shop.example>",
        return_path_domain="return.shop.example",
    )
    parts = Mailing.assemble(
        settings,
        runtime.db,
        runtime.committer,
        runtime.vault,
        runtime.recorder,
        mail_settings=mail,
    )
    try:
        yield runtime, parts
    finally:
        await parts.close()
        await runtime.close()


async def _content_and_customer(
    runtime: Runtime, consent: bool = True
) -> tuple[int, int]:
    async def setup(conn: object) -> tuple[int, int]:
        content = await create_content(
            conn,  # type: ignore[arg-type]
            PORTAL_ID,
            BRAND_ID,
            ContentInput(
                name="Offer",
                subject="Offer {{ UniqueOfferId }} for {{ customer.first_name }}",
                html=OFFER_HTML,
                text=OFFER_TEXT,
                variables={"UniqueOfferId": "none", "InteractionId": "0"},
            ),
        )
        customer = await create_customer(
            conn,  # type: ignore[arg-type]
            PORTAL_ID,
            BRAND_ID,
            CustomerInput(
                email="Ann@Example.org",
                first_name="Ann",
                external_id="C-1",
                tracking_consent=consent,
            ),
        )
        return content.id, customer.id

    return await runtime.committer.run(setup)


async def test_single_send_reaches_smtp_and_pega_with_the_offer_ids(
    mailing: tuple[Runtime, Mailing], sink: Sink, sandbox: SandboxEndpoint
) -> None:
    runtime, parts = mailing
    content_id, customer_id = await _content_and_customer(runtime)
    spec = SendSpec(
        PORTAL_ID,
        BRAND_ID,
        "SINGLEMAIL",
        content_id,
        manual_options={"UniqueOfferId": "OF-77", "InteractionId": INTERACTION_ID},
    )

    broadcast_id, _ = await parts.sender.send_single(spec, customer_id)
    [received] = await sink.wait_for(1)
    await sandbox.wait_for(1)

    message = received.parsed()
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    event = sandbox.received[0].json()
    assert f'content="{INTERACTION_ID}"' in html and "/t/c/" in html
    assert received.sender.startswith("bounce+") and message["List-Unsubscribe-Post"]
    assert (
        event["broadcast_manual_options"]
        == {
            "UniqueOfferId": "OF-77",
            "InteractionId": INTERACTION_ID,
        }
        and event["broadcast_id"] == broadcast_id
    )


async def _customers(runtime: Runtime, count: int, **counters: int) -> list[int]:
    from pegabridge.store.tables import customers

    async def insert(conn: object) -> list[int]:
        ids = []
        for i in range(count):
            customer = await create_customer(
                conn,  # type: ignore[arg-type]
                PORTAL_ID,
                BRAND_ID,
                CustomerInput(
                    email=f"c{i}-{len(counters)}@example.org", first_name="C"
                ),
            )
            ids.append(customer.id)
        if counters:
            await conn.execute(  # type: ignore[attr-defined]
                customers.update().where(customers.c.id.in_(ids)).values(**counters)
            )
        return ids

    return await runtime.committer.run(insert)


class _FailingAfter:
    """A transport that takes ``limit`` messages, then reports the relay down."""

    def __init__(self, inner: Any, limit: int) -> None:
        self.inner, self.limit, self.taken = inner, limit, 0

    async def send(self, envelope: Any, message: bytes) -> Any:
        if self.taken >= self.limit:
            raise TransportError("relay down (test)")
        self.taken += 1
        return await self.inner.send(envelope, message)

    async def close(self) -> None:
        await self.inner.close()


async def test_a_bulk_send_skips_customers_who_are_not_mailable_and_counts_them(
    mailing: tuple[Runtime, Mailing], sink: Sink, sandbox: SandboxEndpoint
) -> None:
    runtime, parts = mailing
    content_id, _ = await _content_and_customer(runtime)
    await _customers(runtime, 3, bounce_count_hard=1)
    await _customers(runtime, 2, bounce_count_soft=5, complaint_count=0)

    send_id = await parts.sender.create_send(
        SendSpec(PORTAL_ID, BRAND_ID, "QUICKMAIL", content_id)
    )
    summary = await parts.sender.run_send(send_id)

    assert summary.report.sent == 1
    assert summary.report.skipped == {"hard-bounced": 3, "soft-bounced": 2}
    assert len(await sink.wait_for(1)) == 1


async def test_a_send_stopped_by_the_relay_resumes_without_doubles(
    mailing: tuple[Runtime, Mailing],
    sink: Sink,
    sandbox: SandboxEndpoint,
    settings: Settings,
) -> None:
    runtime, parts = mailing
    content_id, _ = await _content_and_customer(runtime)
    await _customers(runtime, 11)
    send_id = await parts.sender.create_send(
        SendSpec(PORTAL_ID, BRAND_ID, "QUICKMAIL", content_id)
    )
    broken = Mailing.assemble(
        settings,
        runtime.db,
        runtime.committer,
        runtime.vault,
        runtime.recorder,
        mail_settings=parts.settings,
        transport=_FailingAfter(parts.transport, 5),
    )

    with pytest.raises(SendFailed):
        await broken.sender.run_send(send_id)
    summary = await parts.sender.run_send(send_id)
    await sandbox.wait_for(12)

    ids = [r.json()["broadcast_id"] for r in sandbox.received]
    assert summary.report.sent == 12 and len(sink.handler.received) == 12
    assert len(set(ids)) == len(ids) == 12


async def test_a_recipient_refused_by_the_relay_is_a_hard_bounce_at_once(
    mailing: tuple[Runtime, Mailing], sink: Sink, sandbox: SandboxEndpoint
) -> None:
    runtime, parts = mailing
    content_id, customer_id = await _content_and_customer(runtime)
    sink.handler.refuse["ann@example.org"] = "550 5.1.1 <ann@example.org>: no such user"
    labels = {"type": "HARD", "reason": "user unknown"}
    counted = REGISTRY.get_sample_value("pegabridge_bounces_total", labels) or 0.0

    await parts.sender.send_single(
        SendSpec(PORTAL_ID, BRAND_ID, "SINGLEMAIL", content_id), customer_id
    )
    await sandbox.wait_for(2)

    events = {r.json()["metric"]: r.json() for r in sandbox.received}
    assert events["bounces"]["bounce_type"] == "HARD"
    assert events["bounces"]["bounce_code"] == "5.1.1"
    assert events["bounces"]["bounce_count_hard"] == 1
    async with runtime.db.connect() as conn:
        customer = await get_customer(conn, PORTAL_ID, BRAND_ID, customer_id)
    assert (customer.bounce_count_hard, customer.bounce_count_soft) == (1, 0)
    assert not_mailable_reason(customer) is not None
    after = REGISTRY.get_sample_value("pegabridge_bounces_total", labels)
    assert after == counted + 1


async def test_without_tracking_consent_there_is_no_pixel_and_no_tracked_link(
    mailing: tuple[Runtime, Mailing], sink: Sink
) -> None:
    runtime, parts = mailing
    content_id, customer_id = await _content_and_customer(runtime, consent=False)

    await parts.sender.send_single(
        SendSpec(PORTAL_ID, BRAND_ID, "SINGLEMAIL", content_id), customer_id
    )
    [received] = await sink.wait_for(1)

    html = received.parsed().get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "/t/c/" not in html and "/t/o/" not in html and "/t/s/" not in html
    assert 'href="https://shop.example/s"' in html


async def test_erasing_a_customer_leaves_no_address_behind(
    mailing: tuple[Runtime, Mailing], sink: Sink, sandbox: SandboxEndpoint
) -> None:
    from sqlalchemy import select

    from pegabridge.mailing.customers import erase_customer
    from pegabridge.store.tables import broadcasts, outbox

    runtime, parts = mailing
    content_id, customer_id = await _content_and_customer(runtime)
    spec = SendSpec(PORTAL_ID, BRAND_ID, "SINGLEMAIL", content_id)
    await parts.sender.send_single(spec, customer_id)
    await sandbox.wait_for(1)
    for _ in range(100):  # until the delivery is stored, not only received
        async with runtime.db.connect() as conn:
            states = (await conn.execute(select(outbox.c.state))).scalars().all()
        if states == ["delivered"]:
            break
        await asyncio.sleep(0.05)

    async def erase_then_look(conn: Any) -> list[str]:
        await erase_customer(conn, PORTAL_ID, BRAND_ID, customer_id)
        payloads = (await conn.execute(select(outbox.c.payload))).scalars().all()
        addresses = (await conn.execute(select(broadcasts.c.email_address))).scalars()
        return [*payloads, *addresses]

    stored = await runtime.committer.run(erase_then_look)

    assert not any("ann@example.org" in text.lower() for text in stored)
