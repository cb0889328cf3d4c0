"""Amazon SES notifications (bounce, complaint, delivery) delivered as JSON by e-mail.

SES publishes these through SNS; an e-mail subscription receives the JSON document as
the body. SNS wraps long lines by inserting ``"!\\n "``, which is undone before parsing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from pegabridge.feedback import codes

# SES words a refusal as its own summary, then the receiving server's reply in quotes:
# "5.1.0 - Unknown address error 550-'5.7.1 <id@...>... Access denied'".
_RELAYED_REPLY = re.compile(
    r"^\s*[245]\.\d{1,3}\.\d{1,3} - [^'\n]{0,80}?\b([245]\d\d)[- ]'([^']{1,1000})'"
)


def remote_answer(diagnostic: str) -> str:
    """The receiving server's own reply quoted in an SES diagnostic, or ``""``.

    SES puts a summary code of its own ("5.1.0 - Unknown address error") before the
    reply it was given; the quoted reply says what really happened.
    """
    match = _RELAYED_REPLY.match(diagnostic)
    if match is None:
        return ""
    return f"{match.group(1)} {match.group(2).strip()}"


@dataclass(frozen=True, slots=True)
class SesRecipient:
    """One recipient of an SES notification."""

    address: str
    status: str = ""
    action: str = ""
    diagnostic: str = ""


@dataclass(frozen=True, slots=True)
class SesNotification:
    """The parts of an SES notification that pegabridge uses."""

    notification_type: str
    recipients: tuple[SesRecipient, ...]
    bounce_type: str = ""
    feedback_type: str = ""


def find_notification(text: str) -> SesNotification | None:
    """The SES notification in a body, or ``None`` when there is none."""
    if "notificationType" not in text:
        return None
    document = _load_json(text)
    if document is None:
        return None

    kind = str(document.get("notificationType", ""))
    if kind == "Bounce":
        return _bounce(document)
    if kind == "Complaint":
        return _complaint(document)
    if kind == "Delivery":
        return _delivery(document)
    return None


def _load_json(text: str) -> dict[str, Any] | None:
    start = text.find("{")
    end = text.rfind("}")
    if start < 0 or end <= start:
        return None
    body = text[start : end + 1].replace("!\r\n ", "").replace("!\n ", "")
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    return _unwrapped(document)


def _unwrapped(document: dict[str, Any]) -> dict[str, Any]:
    """The SES notification inside an SNS envelope, whose ``Message`` holds it as a
    JSON string; ``document`` itself when it is not such an envelope."""
    inner = document.get("Message")
    if "notificationType" in document or not isinstance(inner, str):
        return document
    try:
        notification = json.loads(inner)
    except ValueError:
        return document
    return notification if isinstance(notification, dict) else document


def _as_list(value: object) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def _section(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    return value if isinstance(value, dict) else {}


def _bounce(document: dict[str, Any]) -> SesNotification:
    bounce = _section(document, "bounce")
    recipients = tuple(
        SesRecipient(
            address=str(item.get("emailAddress", "")),
            status=codes.normalize_enhanced(str(item.get("status", ""))),
            action=str(item.get("action", "")).lower(),
            diagnostic=str(item.get("diagnosticCode", "")),
        )
        for item in _as_list(bounce.get("bouncedRecipients"))
    )
    return SesNotification(
        "Bounce", recipients, bounce_type=str(bounce.get("bounceType", ""))
    )


def _complaint(document: dict[str, Any]) -> SesNotification:
    complaint = _section(document, "complaint")
    recipients = tuple(
        SesRecipient(address=str(item.get("emailAddress", "")))
        for item in _as_list(complaint.get("complainedRecipients"))
    )
    feedback_type = str(complaint.get("complaintFeedbackType", "") or "abuse")
    return SesNotification("Complaint", recipients, feedback_type=feedback_type.lower())


def _delivery(document: dict[str, Any]) -> SesNotification:
    delivery = _section(document, "delivery")
    response = str(delivery.get("smtpResponse", ""))
    raw = delivery.get("recipients")
    addresses = [str(item) for item in raw] if isinstance(raw, list) else []
    recipients = tuple(
        SesRecipient(
            address=address,
            status=codes.normalize_enhanced(response),
            action="delivered",
            diagnostic=response,
        )
        for address in addresses
    )
    return SesNotification("Delivery", recipients)
