"""Finding enhanced and reply codes in text without misreading addresses."""

from __future__ import annotations

from pegabridge.feedback import amazonses
from pegabridge.feedback.codes import (
    find_enhanced_codes,
    find_reply_code,
    is_pseudo_code,
    normalize_enhanced,
)


def test_an_ip_address_is_not_a_status_code() -> None:
    assert find_enhanced_codes("host 192.0.2.1 said 5.1.1 gone") == ["5.1.1"]


def test_a_software_version_is_not_a_status_code() -> None:
    assert find_enhanced_codes("Sendmail 8.12.11/8.12.11 and 2.5.10.3") == []


def test_pseudo_codes_are_never_returned() -> None:
    assert is_pseudo_code("5.0.910")
    assert normalize_enhanced("5.0.910") == ""


def test_a_reply_code_is_read_before_its_enhanced_code() -> None:
    assert (
        find_reply_code("host said: 550-5.1.1 The email account does not exist")
        == "550"
    )


def test_a_code_in_a_qmail_hash_is_read() -> None:
    assert find_enhanced_codes("no mailbox here by that name. (#5.1.1)") == ["5.1.1"]


def test_an_ses_summary_gives_way_to_the_quoted_reply() -> None:
    answer = amazonses.remote_answer(
        "5.1.0 - Unknown address error 550-'5.2.2 <a@b.example>... Mailbox Full'"
    )

    assert answer == "550 5.2.2 <a@b.example>... Mailbox Full"


def test_a_diagnostic_without_an_ses_summary_has_no_quoted_reply() -> None:
    assert amazonses.remote_answer("smtp; 550 5.1.1 'user' unknown") == ""
