"""Complaints: RFC 5965 ARF reports and the older Hotmail-style format.

An ARF report carries a ``message/feedback-report`` part with ``Feedback-Type`` and,
when not redacted, ``Original-Rcpt-To``. When the provider redacts the recipient, the
complaining recipient is read from the returned original's ``To``. Hotmail's older
format is a plain ``multipart/mixed`` from ``staff@hotmail.com`` whose attached original
names the recipient in ``X-HmXmrOriginalRecipient``.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from pegabridge.feedback import mime


@dataclass(frozen=True, slots=True)
class Complaint:
    """The complaining recipients and the feedback type of one report."""

    feedback_type: str
    recipients: tuple[str, ...]


def find_complaint(msg: Message, original: Message | None) -> Complaint | None:
    """The complaint in ``msg``, or ``None`` when it is not a complaint."""
    for part in mime.walk(msg):
        if mime.content_type(part) == "message/feedback-report":
            return _arf(mime.part_text(part), original)

    if _is_hotmail(msg, original):
        return _hotmail(original)

    return None


def _arf(text: str, original: Message | None) -> Complaint:
    fields = [field for block in mime.field_blocks(text) for field in block]
    feedback_type = next(
        (value.strip().lower() for name, value in fields if name == "feedback-type"),
        "abuse",
    )

    recipients = [
        mime.first_address(value)
        for name, value in fields
        if name in ("original-rcpt-to", "removal-recipient")
    ]
    recipients = [address for address in recipients if address]
    if not recipients:
        recipients = _original_recipients(original)

    return Complaint(feedback_type=feedback_type, recipients=_unique(recipients))


def _is_hotmail(msg: Message, original: Message | None) -> bool:
    if original is not None and mime.header(original, "x-hmxmroriginalrecipient"):
        return True
    return "staff@hotmail.com" in mime.header(msg, "from").lower()


def _hotmail(original: Message | None) -> Complaint:
    recipients: list[str] = []
    if original is not None:
        recipients = mime.addresses_in(
            mime.header(original, "x-hmxmroriginalrecipient")
        )
    if not recipients:
        recipients = _original_recipients(original)
    return Complaint(feedback_type="abuse", recipients=_unique(recipients))


def _original_recipients(original: Message | None) -> list[str]:
    if original is None:
        return []
    return mime.addresses_in(mime.header(original, "to"))


def _unique(addresses: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(addresses))
