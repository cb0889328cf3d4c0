"""The classification table: code first, then text, then broad fallbacks."""

from __future__ import annotations

import pytest

from pegabridge.feedback.classify import (
    RULES,
    classify,
    classify_reason,
    is_filter_gateway,
    refused_command,
)
from pegabridge.feedback.models import BounceReason as R
from pegabridge.feedback.models import BounceType


@pytest.mark.parametrize(
    ("status", "reply", "text", "reason"),
    [
        ("5.1.1", "550", "no such mailbox", R.USER_UNKNOWN),
        ("5.2.2", "552", "", R.MAILBOX_FULL),
        ("5.0.0", "550", "Host or domain name not found", R.HOST_UNKNOWN),
        (
            "5.7.1",
            "554",
            "client host blocked using zen.spamhaus.org",
            R.SENDER_BLOCKED,
        ),
        ("", "550", "Message rejected as spam", R.SPAM_DETECTED),
        ("5.1.6", "", "", R.HAS_MOVED),
        ("4.4.7", "", "", R.EXPIRED),
        ("", "", "nothing telling here", R.OTHER),
        ("", "550", "... Remote protocol error", R.NETWORK_ERROR),
    ],
)
def test_the_reason_follows_the_table(
    status: str, reply: str, text: str, reason: R
) -> None:
    assert classify_reason(status, reply, text) is reason


def test_a_specific_code_wins_over_the_text() -> None:
    assert classify_reason("5.2.2", "550", "user unknown") is R.MAILBOX_FULL


def test_a_permanent_policy_block_is_soft() -> None:
    assert classify("5.7.1", "550", "blocked by policy")[1] is BounceType.SOFT


def test_an_unknown_user_with_a_temporary_code_is_still_hard() -> None:
    assert classify("4.1.1", "450", "")[1] is BounceType.HARD


def test_an_unknown_host_with_a_temporary_code_is_soft() -> None:
    assert classify("4.0.0", "", "Domain name not found")[1] is BounceType.SOFT


def test_an_unknown_user_refused_after_data_is_a_content_filter() -> None:
    text = "550 User unknown (in reply to end of DATA command)"
    reason, bounce_type = classify("5.0.0", "550", text)

    assert reason is R.CONTENT_REJECTED
    assert bounce_type is BounceType.SOFT


def test_a_mailbox_lookup_answered_at_data_is_still_an_unknown_user() -> None:
    text = (
        "host mx.mail.b.example said: 554 delivery error: dd This user doesn't have"
        " a b.example account (ada@b.example) [0] (in reply to end of DATA command)"
    )

    assert classify("5.0.0", "554", text) == (R.USER_UNKNOWN, BounceType.HARD)


def test_a_disabled_mailbox_answered_at_data_stays_a_disabled_mailbox() -> None:
    text = (
        "554 delivery error: dd Sorry, this account has been disabled [#102]"
        " (in reply to end of DATA command)"
    )

    assert classify("5.0.0", "554", text) == (R.MAILBOX_DISABLED, BounceType.SOFT)


def test_a_refused_mail_from_never_makes_the_recipient_hard() -> None:
    text = "SMTP error after MAIL FROM:<x@y.example>: 553 no such user"

    assert classify("", "553", text)[1] is BounceType.SOFT


def test_a_sendmail_transcript_with_need_rcpt_was_a_recipient_refusal() -> None:
    text = ">>> DATA\n<<< 550 5.1.1 User unknown\n<<< 503 5.0.0 Need RCPT (recipient)"

    assert refused_command(text) == "RCPT"


@pytest.mark.parametrize(
    "answer_to_data",
    [
        "<<< 554 5.5.1 Error: no valid recipients",
        "<<< 503 valid RCPT command must precede DATA",
    ],
)
def test_a_pipelined_transcript_whose_data_found_no_recipient_was_a_recipient_refusal(
    answer_to_data: str,
) -> None:
    text = f">>> DATA\n<<< 550 5.5.0 Invalid recipient\n{answer_to_data}"

    assert refused_command(text) == "RCPT"
    assert classify("5.5.0", "550", text) == (R.USER_UNKNOWN, BounceType.HARD)


def test_a_refusal_after_data_that_kept_its_recipients_stays_a_data_refusal() -> None:
    text = ">>> DATA\n<<< 550 5.7.1 Message refused\n<<< 221 2.0.0 Bye"

    assert refused_command(text) == "DATA"


def test_every_rule_pattern_compiles_to_something_matchable() -> None:
    assert all(rule.pattern.pattern for rule in RULES)


def test_unknown_user_words_under_a_mailbox_disabled_code_are_a_filter() -> None:
    reason, bounce_type = classify(
        "5.2.1", "550", "550 5.2.1 <a@b.example>... User Unknown"
    )

    assert reason is R.CONTENT_REJECTED
    assert bounce_type is BounceType.SOFT


def test_unknown_user_words_under_a_policy_code_are_a_filter() -> None:
    assert classify("5.7.1", "550", "550 5.7.1 User Unknown: a@b.example") == (
        R.CONTENT_REJECTED,
        BounceType.SOFT,
    )


def test_unknown_user_words_refused_at_rcpt_stay_hard_under_any_code() -> None:
    text = (
        "SMTP error from remote mail server after RCPT TO:<a@b.example>: "
        "550 5.2.1 <a@b.example>... User Unknown"
    )

    assert classify("5.2.1", "550", text) == (R.USER_UNKNOWN, BounceType.HARD)


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("mx.b.example [192.0.2.1] did not like our RCPT TO: 550 no such user", "RCPT"),
        ("Technical details: SMTP:RCPT host 192.0.2.8: 553 invalid", "RCPT"),
        ("Technical details: SMTP:DATA host 192.0.2.8: 554 refused", "DATA"),
    ],
)
def test_the_refused_command_is_read_from_more_phrasings(
    text: str, command: str
) -> None:
    assert refused_command(text) == command


def test_a_filtering_gateway_is_known_by_its_header() -> None:
    headers = [("From", "MAILER-DAEMON@gw.example"), ("X-Mailer", "SurfControl")]

    assert is_filter_gateway(headers)
    assert not is_filter_gateway([("X-Mailer", "Postfix")])


def test_a_gateway_unknown_user_with_a_user_code_stays_hard() -> None:
    assert classify("5.1.1", "550", "User unknown", gateway=True)[1] is BounceType.HARD


@pytest.mark.parametrize(
    "text",
    [
        "after end of data: 553 mail.b.example does not exist",
        "554 The mail could not be delivered because the domain is not reachable.",
    ],
)
def test_a_host_that_does_not_exist_is_an_unknown_host(text: str) -> None:
    assert classify("", "553", text) == (R.HOST_UNKNOWN, BounceType.HARD)


def test_an_address_that_does_not_exist_is_still_an_unknown_user() -> None:
    assert classify_reason("", "550", "ada@b.example does not exist") is R.USER_UNKNOWN


def test_words_of_a_full_mailbox_overrule_an_unknown_user_code() -> None:
    text = "552 sorry, mailbox ada@b.example is over quota temporarily (#5.1.1)"

    assert classify("5.1.1", "552", text) == (R.MAILBOX_FULL, BounceType.SOFT)


def test_a_full_mailbox_of_another_recipient_does_not_overrule_the_code() -> None:
    around = "b@c.example: 552 5.2.2 Mailbox full"

    assert classify("5.1.1", "550", "550 5.1.1 no such user", around)[0] is (
        R.USER_UNKNOWN
    )


def test_an_x_unix_failure_does_not_call_the_address_bad() -> None:
    reason, bounce_type = classify(
        "5.1.1", "", "procmail: no such user", diagnostic_type="X-Unix"
    )

    assert (reason, bounce_type) == (R.SYSTEM_ERROR, BounceType.SOFT)


def test_an_x_unix_full_mailbox_stays_a_full_mailbox() -> None:
    reason, _ = classify("4.3.0", "", "quota exceeded", diagnostic_type="x-unix")

    assert reason is R.MAILBOX_FULL


def test_a_host_that_accepts_no_mail_overrules_a_null_mx_code() -> None:
    reason, bounce_type = classify("5.7.27", "550", "550 Host does not accept mail")

    assert (reason, bounce_type) == (R.NOT_ACCEPTING_MAIL, BounceType.HARD)


def test_a_null_mx_code_without_such_words_stays_an_authentication_failure() -> None:
    reason, _ = classify("5.7.27", "550", "550 sender address has no usable MX")

    assert reason is R.AUTHENTICATION_FAILED


@pytest.mark.parametrize(
    "text",
    [
        "550 5.0.0 <ada@b.example>: Recipient address rejected: On hold",
        "550 mailbox ada@b.example is on hold",
        "554 account on hold, contact your provider",
    ],
)
def test_an_address_on_hold_is_a_disabled_mailbox_not_a_bad_address(text: str) -> None:
    assert classify("5.0.0", "550", text) == (R.MAILBOX_DISABLED, BounceType.SOFT)


def test_a_message_on_hold_says_nothing_of_the_mailbox() -> None:
    assert classify_reason("", "", "your message is on hold for review") is R.OTHER
