"""parse_message on small hand-written messages, one format each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pegabridge.feedback.models import (
    BounceReason,
    BounceType,
    FeedbackKind,
    FeedbackReport,
)
from pegabridge.feedback.parse import parse_message

SAMPLES = Path(__file__).resolve().parents[1] / "samples" / "feedback"


def parsed(name: str) -> FeedbackReport:
    return parse_message((SAMPLES / name).read_bytes())


def test_a_dsn_user_unknown_is_a_hard_bounce_with_its_codes() -> None:
    report = parsed("dsn-user-unknown.eml")

    assert report.kind is FeedbackKind.BOUNCE
    [recipient] = report.recipients
    assert (recipient.address, recipient.bounce_code, recipient.smtp_code) == (
        "ada@shop.example",
        "5.1.1",
        "550",
    )
    assert (recipient.bounce_reason, recipient.bounce_type) == (
        BounceReason.USER_UNKNOWN,
        BounceType.HARD,
    )


def test_the_returned_headers_and_the_verp_address_are_exposed() -> None:
    report = parsed("dsn-user-unknown.eml")

    assert report.original.message_id == "<send-41.7@brand.example>"
    assert dict(report.original.pegabridge)["x-pegabridge-broadcast"] == "41"
    assert "bounce+k7Qx2@return.example" in report.return_path_addresses


def test_a_verp_address_at_a_host_without_dots_is_a_return_path() -> None:
    # A trial sends from noreply@localhost: bounces come back to bounce+...@localhost.
    raw = (
        b"From: MAILER-DAEMON@mx.example\r\n"
        b"To: bounce+k7Qx2@localhost\r\n"
        b"Subject: Undelivered Mail\r\n\r\n"
        b"550 5.1.1 <ada@shop.example>: user unknown\r\n"
    )

    report = parse_message(raw)

    assert "bounce+k7Qx2@localhost" in report.return_path_addresses


def test_a_full_mailbox_is_soft_even_with_a_permanent_code() -> None:
    [recipient] = parsed("dsn-mailbox-full.eml").recipients

    assert recipient.bounce_reason is BounceReason.MAILBOX_FULL
    assert recipient.bounce_type is BounceType.SOFT


def test_a_delayed_dsn_is_a_delay_not_a_bounce() -> None:
    report = parsed("dsn-delayed.eml")

    assert report.kind is FeedbackKind.DELAY
    assert report.recipients[0].address == "linus@slow.example"


def test_a_dsn_with_failed_and_delayed_recipients_is_a_bounce_naming_both() -> None:
    report = parsed("dsn-failed-and-delayed.eml")

    assert report.kind is FeedbackKind.BOUNCE
    assert [(r.address, r.action, r.bounce_type) for r in report.recipients] == [
        ("otto@gone.example", "failed", BounceType.HARD),
        ("petra@slow.example", "delayed", BounceType.SOFT),
    ]


def test_a_success_dsn_is_delivered() -> None:
    assert parsed("dsn-delivered.eml").kind is FeedbackKind.DELIVERED


def test_an_exim_blocklist_refusal_is_a_soft_bounce() -> None:
    report = parsed("text-exim-policy.eml")

    assert report.kind is FeedbackKind.BOUNCE
    [recipient] = report.recipients
    assert (recipient.address, recipient.bounce_code) == (
        "barbara@strict.example",
        "5.7.1",
    )
    assert recipient.bounce_type is BounceType.SOFT


def test_an_inline_original_after_a_text_bounce_is_read() -> None:
    report = parsed("text-exim-policy.eml")

    assert report.original.message_id == "<send-42.9@brand.example>"


def test_a_qmail_bounce_reads_the_code_after_a_hash() -> None:
    [recipient] = parsed("text-qmail-unknown.eml").recipients

    assert (recipient.address, recipient.bounce_code) == (
        "edsger@qmail.example",
        "5.1.1",
    )
    assert recipient.bounce_type is BounceType.HARD


def test_a_redacted_arf_complaint_names_the_original_recipient() -> None:
    report = parsed("arf-redacted.eml")

    assert report.kind is FeedbackKind.COMPLAINT
    assert [r.address for r in report.recipients] == ["margaret@inbox.example"]
    assert report.recipients[0].feedback_type == "abuse"


def test_a_hotmail_complaint_reads_the_original_recipient_header() -> None:
    report = parsed("hotmail-complaint.eml")

    assert report.kind is FeedbackKind.COMPLAINT
    assert [r.address for r in report.recipients] == ["john@hotmail.example"]


def test_an_out_of_office_reply_is_an_auto_reply() -> None:
    report = parsed("vacation.eml")

    assert report.kind is FeedbackKind.AUTO_REPLY
    assert report.recipients == ()


def test_an_ordinary_message_is_other() -> None:
    raw = b"From: a@b.example\r\nTo: c@d.example\r\nSubject: hi\r\n\r\nHello there\r\n"

    assert parse_message(raw).kind is FeedbackKind.OTHER


@pytest.mark.parametrize(
    "raw", [b"", b"\x00\xff" * 50, b"Content-Type: multipart/report"]
)
def test_degenerate_input_is_other(raw: bytes) -> None:
    assert parse_message(raw).kind is FeedbackKind.OTHER


def test_an_ses_complaint_notification_is_a_complaint() -> None:
    body = (
        b'{"notificationType":"Complaint","complaint":{"complainedRecipients":'
        b'[{"emailAddress":"rosa@inbox.example"}],"complaintFeedbackType":"abuse"}}'
    )
    raw = (
        b"From: no-reply@sns.amazonaws.com\r\nSubject: AWS Notification\r\n\r\n" + body
    )

    report = parse_message(raw)

    assert report.kind is FeedbackKind.COMPLAINT
    assert report.recipients[0].address == "rosa@inbox.example"


def test_an_unknown_user_from_a_filtering_gateway_is_a_soft_filter_verdict() -> None:
    [recipient] = parsed("text-gateway-unknown-user.eml").recipients

    assert recipient.bounce_reason is BounceReason.CONTENT_REJECTED
    assert recipient.bounce_type is BounceType.SOFT


def test_the_same_unknown_user_from_an_ordinary_server_is_hard() -> None:
    raw = (SAMPLES / "text-gateway-unknown-user.eml").read_bytes()
    plain = raw.replace(b"X-NAI-Header: Modified by McAfee", b"X-Mailer: relay")

    [recipient] = parse_message(plain).recipients

    assert recipient.bounce_type is BounceType.HARD


def test_a_notice_without_a_cause_yields_to_the_bounce_it_wraps() -> None:
    [recipient] = parsed("wrapped-report-no-cause.eml").recipients

    assert recipient.address == "ada@inbox.example"
    assert recipient.bounce_code == "5.1.1"
    assert recipient.bounce_type is BounceType.HARD


def test_the_reply_ses_quotes_outweighs_its_own_summary_code() -> None:
    [recipient] = parsed("ses-relayed-refusal.eml").recipients

    assert recipient.bounce_code == "5.7.1"
    assert recipient.bounce_reason is BounceReason.SENDER_BLOCKED
    assert recipient.bounce_type is BounceType.SOFT


def test_a_local_delivery_program_failing_is_a_soft_system_error() -> None:
    [recipient] = parsed("dsn-local-delivery-failed.eml").recipients

    assert recipient.bounce_reason is BounceReason.SYSTEM_ERROR
    assert recipient.bounce_type is BounceType.SOFT


def test_exims_failed_recipients_header_names_the_recipient_its_text_omits() -> None:
    report = parsed("text-exim-failed-recipients-header.eml")

    assert report.kind is FeedbackKind.BOUNCE
    assert [r.address for r in report.recipients] == ["tove@inbox.example"]


def test_an_ses_bounce_inside_an_sns_envelope_is_read() -> None:
    inner = (
        '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent",'
        '"bouncedRecipients":[{"emailAddress":"otto@inbox.example","status":"5.1.1",'
        '"diagnosticCode":"smtp; 550 5.1.1 user unknown"}]}}'
    )
    envelope = json.dumps({"Type": "Notification", "Message": inner}, indent=2)
    raw = b"From: no-reply@sns.amazonaws.com\r\nSubject: AWS Notification\r\n\r\n"

    [recipient] = parse_message(raw + envelope.encode()).recipients

    assert recipient.address == "otto@inbox.example"
    assert recipient.bounce_type is BounceType.HARD


def test_a_sendmail_line_speaks_only_for_its_own_address() -> None:
    first, second = parsed("text-sendmail-per-line.eml").recipients

    assert first.bounce_reason is BounceReason.NETWORK_ERROR
    assert first.bounce_type is BounceType.SOFT
    assert second.bounce_reason is BounceReason.HOST_UNKNOWN


def test_a_recipient_also_in_the_bounces_x_original_to_is_still_reported() -> None:
    [recipient] = parsed("text-original-to-names-recipient.eml").recipients

    assert recipient.address == "ingrid@inbox.example"
    assert recipient.bounce_type is BounceType.HARD


def test_a_list_that_refuses_a_non_member_bounces_the_list_address() -> None:
    report = parsed("list-not-a-member.eml")

    assert report.kind is FeedbackKind.BOUNCE
    [recipient] = report.recipients
    assert recipient.address == "riverclub@lists.example"
    assert (recipient.bounce_reason, recipient.bounce_type) == (
        BounceReason.POLICY_RELATED,
        BounceType.SOFT,
    )


def test_a_list_that_saw_the_message_loop_bounces_it_softly() -> None:
    [recipient] = parsed("list-loop-alert.eml").recipients

    assert recipient.address == "orchard@lists.example"
    assert recipient.bounce_reason is BounceReason.NETWORK_ERROR


def test_a_post_held_for_the_list_moderator_is_no_bounce() -> None:
    assert parsed("list-held-for-moderator.eml").kind is FeedbackKind.OTHER
