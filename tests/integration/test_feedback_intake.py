"""Returned mail delivered over SMTP to the receiver of `serve` reaches Pega.

The application runs on real HTTP with its delivery workers and its feedback receiver
on a loopback port; an aiosmtplib client delivers hand-written and real (corpus)
bounce and complaint mails; the sandbox endpoint stands in for Pega.
"""

from __future__ import annotations

from typing import Any

import aiosmtplib
import pytest

from feedback_support import (
    RETURN_DOMAIN,
    Sent,
    add_broadcast,
    add_customer,
    corpus_message,
    customer_counts,
    feedback_rows,
    install_brand,
    sample,
)
from pegabridge.config import Settings
from pegabridge.feedback.intake import FeedbackReceiver
from pegabridge.feedback.parse import parse_message
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.web.runtime import Runtime


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"feedback_smtp_port": 0, "return_path_domain": RETURN_DOMAIN}
    )


@pytest.fixture
async def world(served: Any, sandbox: SandboxEndpoint) -> tuple[Runtime, int]:
    """The served runtime with a brand sending to the sandbox; the SMTP port."""
    runtime: Runtime = served.app.state.runtime
    receiver: FeedbackReceiver = served.app.state.feedback_receiver
    await install_brand(runtime, sandbox)
    return runtime, receiver.port


async def deliver(port: int, raw: bytes, recipient: str) -> None:
    """Deliver ``raw`` as returned mail: null sender, one envelope recipient."""
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
        await client.sendmail("", [recipient], raw)


async def sent_to(runtime: Runtime, email: str, message_id: str = "") -> Sent:
    customer_id = await add_customer(runtime, email)
    return await add_broadcast(runtime, customer_id, email, message_id)


async def test_a_bounce_over_smtp_reaches_pega_as_a_bounces_event(
    world: tuple[Runtime, int], sandbox: SandboxEndpoint
) -> None:
    runtime, port = world
    sent = await sent_to(runtime, "ada@inbox.example")

    await deliver(port, sample("dsn-user-unknown.eml", sent), sent.return_path)

    [received] = await sandbox.wait_for(1)
    event = received.json()
    assert (event["metric"], event["broadcast_id"]) == ("bounces", sent.broadcast_id)
    assert (event["bounce_code"], event["bounce_type"], event["bounce_count_hard"]) == (
        "5.1.1",
        "HARD",
        1,
    )


async def test_a_real_bounce_readdressed_by_its_envelope_reaches_pega(
    world: tuple[Runtime, int], sandbox: SandboxEndpoint
) -> None:
    runtime, port = world
    raw, expected = corpus_message("bounces/sisimai", "lhost-exim-05.eml")
    [recipient] = parse_message(raw).recipients
    sent = await sent_to(runtime, recipient.address)

    await deliver(port, raw, sent.return_path)

    [received] = await sandbox.wait_for(1)
    event = received.json()
    assert event["broadcast_id"] == sent.broadcast_id
    assert event["bounce_code"] == expected["status"]
    assert event["bounce_type"] == ("HARD" if expected["hard_bounce"] else "SOFT")


async def test_a_real_bounce_is_matched_by_the_returned_message_id(
    world: tuple[Runtime, int], sandbox: SandboxEndpoint
) -> None:
    runtime, port = world
    raw, expected = corpus_message("bounces/sisimai", "lhost-sendmail-01.eml")
    report = parse_message(raw)
    sent = await sent_to(
        runtime, report.recipients[0].address, report.original.message_id
    )

    await deliver(port, raw, f"postmaster@{RETURN_DOMAIN}")

    [received] = await sandbox.wait_for(1)
    assert received.json()["broadcast_id"] == sent.broadcast_id
    assert received.json()["bounce_code"] == expected["status"]


async def test_an_arf_complaint_over_smtp_reaches_pega_and_stops_mailing(
    world: tuple[Runtime, int], sandbox: SandboxEndpoint
) -> None:
    runtime, port = world
    sent = await sent_to(runtime, "ivy@inbox.example")

    await deliver(port, sample("arf-abuse.eml", sent), f"fbl@{RETURN_DOMAIN}")

    [received] = await sandbox.wait_for(1)
    event = received.json()
    assert (event["metric"], event["complaints"]) == ("complaints", 1)
    assert (await customer_counts(runtime, sent.customer_id))["unsubscribed_at"]


async def test_a_real_arf_complaint_reaches_pega_through_its_original(
    world: tuple[Runtime, int], sandbox: SandboxEndpoint
) -> None:
    runtime, port = world
    raw, expected = corpus_message("complaints/sisimai", "arf-02.eml")
    report = parse_message(raw)
    sent = await sent_to(
        runtime, report.recipients[0].address, report.original.message_id
    )

    await deliver(port, raw, f"fbl@{RETURN_DOMAIN}")

    [received] = await sandbox.wait_for(1)
    assert received.json()["metric"] == "complaints"
    assert received.json()["customer_id"] == sent.customer_id
    assert expected["feedback_type"] == report.feedback_type


async def test_a_real_delay_notice_is_taken_and_sends_nothing(
    world: tuple[Runtime, int],
) -> None:
    runtime, port = world
    raw, _expected = corpus_message("bounces/sisimai", "lhost-gmail-06.eml")

    await deliver(port, raw, f"bounce+whatever@{RETURN_DOMAIN}")

    [row] = await feedback_rows(runtime)
    assert (row["kind"], row["outcome"]) == ("delay", "ignored")


async def test_mail_for_another_domain_is_refused_at_rcpt(
    world: tuple[Runtime, int],
) -> None:
    runtime, port = world
    sent = await sent_to(runtime, "ada@inbox.example")

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await deliver(port, sample("dsn-user-unknown.eml", sent), "ada@elsewhere.test")

    assert await feedback_rows(runtime) == []


async def test_a_message_that_cannot_be_recorded_is_deferred_then_taken_once(
    world: tuple[Runtime, int],
    sandbox: SandboxEndpoint,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime, port = world
    sent = await sent_to(runtime, "lea@inbox.example")
    raw = sample("dsn-user-unknown.eml", sent)

    async def down(_items: Any) -> Any:
        raise ConnectionError("database went away")

    with monkeypatch.context() as patched:
        patched.setattr(runtime.recorder, "record", down)
        with pytest.raises(aiosmtplib.SMTPDataError) as refused:
            await deliver(port, raw, sent.return_path)
    await deliver(port, raw, sent.return_path)

    [received] = await sandbox.wait_for(1)
    assert refused.value.code == 451
    assert received.json()["broadcast_id"] == sent.broadcast_id
    assert len(await feedback_rows(runtime)) == 1
