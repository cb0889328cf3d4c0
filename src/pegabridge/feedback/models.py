"""Typed records describing what a returned mail says.

A :class:`FeedbackReport` is the whole answer of :func:`parse_message`: what kind of
message it is, one :class:`RecipientFeedback` per recipient it reports on, and the
headers that let a later step match it to the broadcast it answers. All records are
frozen; the parser builds them once and nobody changes them afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class FeedbackKind(StrEnum):
    """What a returned message is, as printed by ``pegabridge feedback parse``."""

    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    AUTO_REPLY = "auto-reply"
    DELAY = "delay"
    DELIVERED = "delivered"
    OTHER = "other"


class BounceType(StrEnum):
    """``HARD`` only when the address itself is bad; everything else is ``SOFT``."""

    HARD = "HARD"
    SOFT = "SOFT"


class BounceReason(StrEnum):
    """The fixed vocabulary of ``bounce_reason``.

    Only the first four (and ``NOT_ACCEPTING_MAIL``) mean that the address is bad and
    make a bounce ``HARD``; see :mod:`pegabridge.feedback.classify`.
    """

    USER_UNKNOWN = "user unknown"
    HOST_UNKNOWN = "host unknown"
    HAS_MOVED = "has moved"
    NOT_ACCEPTING_MAIL = "not accepting mail"
    MAILBOX_FULL = "mailbox full"
    MAILBOX_DISABLED = "mailbox disabled"
    MESSAGE_TOO_LARGE = "message too large"
    CONTENT_REJECTED = "content rejected"
    SPAM_DETECTED = "spam detected"
    VIRUS_DETECTED = "virus detected"
    POLICY_RELATED = "policy related"
    SENDER_BLOCKED = "sender blocked"
    AUTHENTICATION_FAILED = "authentication failed"
    RATE_LIMITED = "rate limited"
    EXPIRED = "expired"
    NETWORK_ERROR = "network error"
    SYSTEM_ERROR = "system error"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class RecipientFeedback:
    """What the message says about one recipient.

    ``bounce_code`` is an RFC 3463 enhanced status code found in the message (never an
    invented one), ``""`` when there is none; ``smtp_code`` is the three-digit reply
    code, ``""`` when none. ``diagnostic`` is the server's own words, truncated.
    ``action`` is what became of the delivery to this recipient (RFC 3464 words:
    ``failed``, ``delayed``, ``delivered`` ...); a bounce can name delayed recipients
    next to the failed ones.
    ``bounce_reason`` and ``bounce_type`` are set for bounces and delays only;
    ``feedback_type`` for complaints only.
    """

    address: str
    bounce_code: str = ""
    smtp_code: str = ""
    diagnostic: str = ""
    action: str = ""
    bounce_reason: BounceReason | None = None
    bounce_type: BounceType | None = None
    feedback_type: str = ""


@dataclass(frozen=True, slots=True)
class OriginalHeaders:
    """Headers of the message that caused the feedback, as far as it was returned.

    ``pegabridge`` holds every ``X-Pegabridge-*`` header, keyed by its lower-cased name.
    """

    message_id: str = ""
    to: str = ""
    from_: str = ""
    subject: str = ""
    pegabridge: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FeedbackReport:
    """Everything :func:`pegabridge.feedback.parse.parse_message` found in one message.

    ``return_path_addresses`` are the addresses the feedback itself was sent to
    (``To``, ``Delivered-To``, ``X-Original-To``, ``Envelope-To``, the ``for <...>`` of
    its first ``Received`` line), in that order and without duplicates: a VERP return
    path shows up there.
    """

    kind: FeedbackKind
    recipients: tuple[RecipientFeedback, ...] = ()
    original: OriginalHeaders = field(default_factory=OriginalHeaders)
    return_path_addresses: tuple[str, ...] = ()
    subject: str = ""
    from_: str = ""
    feedback_type: str = ""

    def to_json_dict(self) -> dict[str, object]:
        """The inspection view printed by ``pegabridge feedback parse``."""
        return {
            "kind": self.kind.value,
            "recipients": [
                {
                    "address": r.address,
                    "action": r.action or None,
                    "bounce_code": r.bounce_code,
                    "smtp_code": r.smtp_code,
                    "bounce_reason": r.bounce_reason.value if r.bounce_reason else None,
                    "bounce_type": r.bounce_type.value if r.bounce_type else None,
                    "feedback_type": r.feedback_type or None,
                }
                for r in self.recipients
            ],
            "original_message_id": self.original.message_id or None,
            "return_path_addresses": list(self.return_path_addresses),
        }
