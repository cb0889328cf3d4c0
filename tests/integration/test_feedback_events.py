"""Returned mail becomes counters and `bounces`/`complaints` events in the outbox.

Real databases (SQLite and PostgreSQL), the real recorder; no delivery workers, so the
events are read back from the outbox.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from feedback_support import (
    Sent,
    add_broadcast,
    add_customer,
    customer_counts,
    feedback_rows,
    install_brand,
    sample,
)
from pegabridge.config import Settings
from pegabridge.feedback.intake import FeedbackIntake
from pegabridge.feedback.models import BounceReason, BounceType
from pegabridge.feedback.recording import Outcome, record_bounce, resume_recording
from pegabridge.store.tables import outbox
from pegabridge.web.runtime import Runtime

REFUSAL_UUID = "6f1c2a9e-8d4b-4c1e-9a57-3b2d0e8f4a11"
PARSER_SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "feedback"


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    opened = await Runtime.open(settings, deliver=False)
    await install_brand(opened, sandbox=None)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def intake(runtime: Runtime) -> FeedbackIntake:
    return FeedbackIntake(runtime)


async def sent_to(runtime: Runtime, email: str, **counts: int) -> Sent:
    customer_id = await add_customer(runtime, email, **counts)
    return await add_broadcast(runtime, customer_id, email)


async def events(runtime: Runtime, metric: str) -> list[dict[str, Any]]:
    async with runtime.db.connect() as conn:
        rows = await conn.execute(
            select(outbox.c.payload).where(outbox.c.metric == metric)
        )
        return [json.loads(r.payload) for r in rows]


async def test_a_hard_bounce_sends_the_event_with_the_new_hard_count(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "ada@inbox.example")

    await intake.accept(sample("dsn-user-unknown.eml", sent))

    [event] = await events(runtime, "bounces")
    assert (event["bounce_code"], event["bounce_reason"], event["bounce_type"]) == (
        "5.1.1",
        "user unknown",
        "HARD",
    )
    assert (event["bounce_count_hard"], event["bounce_count_soft"]) == (1, 0)
    assert (await customer_counts(runtime, sent.customer_id))["bounce_count_hard"] == 1


async def test_the_event_describes_the_email_as_it_was_sent(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "ada@inbox.example")

    await intake.accept(sample("dsn-user-unknown.eml", sent))

    [event] = await events(runtime, "bounces")
    assert event["broadcast_id"] == sent.broadcast_id
    assert event["customer_id"] == sent.customer_id
    assert event["broadcast_manual_options"] == {"InteractionId": "-563481321460449721"}


async def test_a_full_mailbox_is_soft_and_the_fifth_makes_the_count_five(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "bea@inbox.example", soft=4)

    await intake.accept(sample("dsn-mailbox-full.eml", sent))

    [event] = await events(runtime, "bounces")
    assert (event["bounce_type"], event["bounce_reason"]) == ("SOFT", "mailbox full")
    assert (event["bounce_count_hard"], event["bounce_count_soft"]) == (0, 5)


async def test_the_same_message_twice_is_recorded_once(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "cy@inbox.example")
    raw = sample("dsn-user-unknown.eml", sent)

    first = await intake.accept(raw)
    again = await intake.accept(raw)

    assert (first.outcome, again.outcome, again.seen_before) == (
        Outcome.SENT,
        Outcome.SENT,
        True,
    )
    assert len(await events(runtime, "bounces")) == 1
    assert (await customer_counts(runtime, sent.customer_id))["bounce_count_hard"] == 1


async def test_a_second_report_about_the_same_email_counts_nothing(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "dee@inbox.example")

    await intake.accept(sample("dsn-user-unknown.eml", sent))
    second = await intake.accept(sample("dsn-user-unknown.eml", sent))

    assert second.outcome is Outcome.DUPLICATE
    assert len(await events(runtime, "bounces")) == 1


async def test_a_bounce_that_matches_nothing_is_kept_and_not_sent(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "eve@inbox.example")
    stranger = Sent(0, 0, "eve@inbox.example", "<unknown@elsewhere.example>", "x")

    recorded = await intake.accept(sample("dsn-user-unknown.eml", stranger))

    assert recorded.outcome is Outcome.UNMATCHED
    assert [r["outcome"] for r in await feedback_rows(runtime)] == ["unmatched"]
    assert await events(runtime, "bounces") == []
    assert (await customer_counts(runtime, sent.customer_id))["bounce_count_hard"] == 0


async def test_a_forged_return_path_token_matches_nothing(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "fay@inbox.example")
    forged = Sent(
        sent.broadcast_id, 0, sent.email_address, "<other@brand.example>", "AAAAAAAA"
    )

    recorded = await intake.accept(sample("dsn-user-unknown.eml", forged))

    assert recorded.outcome is Outcome.UNMATCHED


async def test_the_original_message_id_matches_without_a_token(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "gus@inbox.example")
    no_token = Sent(0, 0, sent.email_address, sent.message_id, "lost")

    recorded = await intake.accept(sample("dsn-user-unknown.eml", no_token, header=""))

    assert recorded.broadcast_id == sent.broadcast_id
    assert len(await events(runtime, "bounces")) == 1


async def test_a_plain_broadcast_number_matches_only_its_own_recipient(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "hal@inbox.example")
    other = Sent(0, 0, "someone@else.example", "<x@brand.example>", "lost")
    own = Sent(0, 0, sent.email_address, "<y@brand.example>", "lost")

    foreign = await intake.accept(
        sample("dsn-user-unknown.eml", other, header=str(sent.broadcast_id))
    )
    matched = await intake.accept(
        sample("dsn-user-unknown.eml", own, header=str(sent.broadcast_id))
    )

    assert (foreign.outcome, matched.outcome) == (Outcome.UNMATCHED, Outcome.SENT)


async def test_a_redacted_complaint_counts_unsubscribes_and_sends_the_count(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "ivy@inbox.example", complaints=1)

    await intake.accept(sample("arf-abuse.eml", sent))

    [event] = await events(runtime, "complaints")
    assert (event["complaints"], event["customer_id"]) == (2, sent.customer_id)
    assert (await customer_counts(runtime, sent.customer_id))["unsubscribed_at"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("dsn-delayed.eml", "delay"),
        ("dsn-delivered.eml", "delivered"),
        ("vacation.eml", "auto-reply"),
    ],
)
async def test_delays_delivery_notices_and_auto_replies_send_nothing(
    runtime: Runtime, intake: FeedbackIntake, name: str, kind: str
) -> None:
    recorded = await intake.accept((PARSER_SAMPLES / name).read_bytes())

    assert (recorded.kind.value, recorded.outcome) == (kind, Outcome.IGNORED)
    assert await events(runtime, "bounces") == []


async def test_a_bounce_that_names_the_broadcast_recipient_as_delayed_is_a_delay(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "ivo@inbox.example")

    recorded = await intake.accept(sample("dsn-failed-and-delayed.eml", sent))

    assert (recorded.kind.value, recorded.outcome) == ("delay", Outcome.IGNORED)
    assert await events(runtime, "bounces") == []
    assert (await customer_counts(runtime, sent.customer_id))["bounce_count_hard"] == 0


async def test_a_recipient_refused_at_send_time_is_a_bounce_once(
    runtime: Runtime,
) -> None:
    sent = await sent_to(runtime, "jo@inbox.example")

    for _ in range(2):
        await record_bounce(
            runtime,
            sent.broadcast_id,
            "5.1.1",
            "550",
            BounceReason.USER_UNKNOWN,
            BounceType.HARD,
            "550 5.1.1 no such user",
            event_uuid=REFUSAL_UUID,
        )

    [event] = await events(runtime, "bounces")
    assert (event["bounce_type"], event["bounce_count_hard"]) == ("HARD", 1)
    assert event["uuid"] == REFUSAL_UUID


async def test_a_message_cut_off_before_the_outbox_is_finished_with_its_uuid(
    runtime: Runtime, intake: FeedbackIntake, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = await sent_to(runtime, "kit@inbox.example")

    async def crash(_items: Any) -> Any:
        raise ConnectionError("process died")

    with monkeypatch.context() as patched:
        patched.setattr(runtime.recorder, "record", crash)
        with pytest.raises(ConnectionError):
            await intake.accept(sample("dsn-user-unknown.eml", sent))
    finished = await resume_recording(runtime)

    [row] = await feedback_rows(runtime)
    [event] = await events(runtime, "bounces")
    assert (finished, row["outcome"]) == (1, "sent")
    assert event["uuid"] == json.loads(json.loads(row["events"])[0])["uuid"]


async def test_a_return_path_lowercased_on_the_way_falls_back_to_the_header(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    sent = await sent_to(runtime, "lou@inbox.example")
    lowered = Sent(
        sent.broadcast_id,
        sent.customer_id,
        sent.email_address,
        "<other@brand.example>",
        sent.token.lower(),
    )
    raw = sample("dsn-user-unknown.eml", lowered, header=sent.token)

    recorded = await intake.accept(raw, envelope_recipients=[lowered.return_path])

    [row] = await feedback_rows(runtime)
    assert recorded.broadcast_id == sent.broadcast_id
    assert json.loads(row["summary"])["matched_by"] == "header"


async def test_a_recorded_bounce_moves_the_bounce_and_feedback_metrics(
    runtime: Runtime, intake: FeedbackIntake
) -> None:
    from pegabridge.metrics import REGISTRY

    def sample_value(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    bounce_labels = {"type": "HARD", "reason": "user unknown"}
    before = sample_value("pegabridge_bounces_total", bounce_labels)
    sent = await sent_to(runtime, "grace@inbox.example")

    await intake.accept(sample("dsn-user-unknown.eml", sent))

    assert sample_value("pegabridge_bounces_total", bounce_labels) == before + 1
