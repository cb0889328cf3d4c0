"""A single send through a real SMTP server on loopback, and its broadcasts event."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

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
from pegabridge.mailing.customers import CustomerInput, create_customer
from pegabridge.mailing.sends import SendSpec
from pegabridge.mailing.service import Mailing
from pegabridge.mailing.settings import MailSettings
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
