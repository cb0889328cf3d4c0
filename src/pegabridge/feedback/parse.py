"""``parse_message``: one returned mail in, one :class:`FeedbackReport` out.

The reading order is fixed, from the most to the least machine-readable:

1. complaints (ARF ``message/feedback-report``, Hotmail-style reports);
2. Amazon SES JSON notifications;
3. RFC 3464 per-recipient groups (``message/delivery-status`` or the same fields in
   text), where ``Action`` decides between bounce, delay and delivered;
4. automatic replies (RFC 3834 and common habits);
5. free-text bounces, recognised by their sender, subject or wording, and
   mailing-list managers' refusals (:mod:`pegabridge.feedback.lists`);
6. anything else is ``other``.

Parsing never raises: a failure inside is logged (event key ``feedback.parse_failed``)
and the message is reported as ``other``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from email.message import Message

from pegabridge.feedback import (
    amazonses,
    autoreply,
    classify,
    codes,
    complaints,
    dsn,
    freetext,
    lists,
    mime,
    original,
)
from pegabridge.feedback.models import (
    BounceReason,
    BounceType,
    FeedbackKind,
    FeedbackReport,
    RecipientFeedback,
)

logger = logging.getLogger(__name__)

_TAG = re.compile(r"<[^>]{0,2000}>")
_SUCCESS_ACTIONS = frozenset({"delivered", "relayed", "expanded"})
_CLASSIFY_TEXT_MAX = 2000


@dataclass
class _Parts:
    """The report text and the delivery-status text of a message, outside its copy."""

    texts: list[str] = field(default_factory=list)
    status_texts: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Context:
    """What every reading step needs to know about the message."""

    msg: Message
    report_text: str
    subject: str
    from_: str
    excluded: frozenset[str]
    gateway: bool = False


def parse_message(raw: bytes) -> FeedbackReport:
    """Read a returned mail (bounce, complaint, auto-reply, ...) into a report.

    Never raises, whatever ``raw`` holds; what cannot be read is ``other``.
    """
    try:
        return _parse(raw)
    except Exception:
        logger.warning(
            "feedback message could not be parsed",
            extra={"event": "feedback.parse_failed", "size": len(raw)},
            exc_info=True,
        )
        return FeedbackReport(kind=FeedbackKind.OTHER)


def _parse(raw: bytes, depth: int = 0) -> FeedbackReport:
    msg = mime.load(raw)
    parts = _collect(msg)
    report_text = "\n\n".join(parts.texts)

    returned = original.find_original(msg, report_text)
    base = FeedbackReport(
        kind=FeedbackKind.OTHER,
        original=original.original_headers(returned),
        return_path_addresses=original.return_path_addresses(msg),
        subject=mime.header(msg, "subject"),
        from_=mime.header(msg, "from"),
    )
    context = _Context(
        msg=msg,
        report_text=report_text,
        subject=base.subject,
        from_=base.from_,
        excluded=_excluded_addresses(msg, returned),
        gateway=classify.is_filter_gateway(msg.items()),
    )

    complaint = complaints.find_complaint(msg, returned)
    if complaint is not None:
        return _complaint_report(base, complaint)

    notification = amazonses.find_notification(report_text)
    if notification is not None:
        return _ses_report(base, notification)

    status_text = "\n\n".join(parts.status_texts)
    if not status_text and "final-recipient" in report_text.lower():
        status_text = freetext.report_part(report_text)
    groups = dsn.recipients_from_text(status_text) if status_text else []
    if groups:
        return _dsn_report(base, context, groups)

    report = _unstructured_report(base, context, returned)
    if _told_why(report) or returned is None or depth > 0:
        return report
    return _forwarded_report(report, returned, depth)


def _told_why(report: FeedbackReport) -> bool:
    """Whether a report names recipients and, for one of them, a code or a reason.

    A notice that names the recipients but says nothing of the cause may wrap the
    real bounce, which is then the better witness.
    """
    return any(
        r.bounce_code or r.smtp_code or r.bounce_reason is not BounceReason.OTHER
        for r in report.recipients
    )


def _forwarded_report(
    report: FeedbackReport, returned: Message, depth: int
) -> FeedbackReport:
    """Some gateways wrap the real bounce as an attachment of their own notice."""
    if mime.content_type(returned) != "multipart/report":
        return report
    try:
        inner_raw = returned.as_bytes()
    except Exception:  # a broken attachment is not worth failing the outer report
        return report
    inner = _parse(inner_raw, depth + 1)
    return inner if inner.recipients else report


def _collect(msg: Message) -> _Parts:
    """Texts of the report, without descending into the returned original."""
    parts = _Parts()
    stack = [msg]
    seen = 0
    while stack and seen < 200:
        part = stack.pop()
        seen += 1
        kind = mime.content_type(part)
        payload = part.get_payload()
        if kind in ("message/rfc822", "text/rfc822-headers"):
            continue
        if kind == "message/delivery-status":
            parts.status_texts.append(mime.part_text(part))
            continue
        if isinstance(payload, list):
            stack.extend(
                reversed([child for child in payload if isinstance(child, Message)])
            )
            continue
        if kind.startswith(("text/", "multipart/")) or part is msg:
            text = mime.part_text(part)
            parts.texts.append(_TAG.sub(" ", text) if kind == "text/html" else text)
    return parts


def _excluded_addresses(msg: Message, returned: Message | None) -> frozenset[str]:
    """Addresses that name the sender or the bounce's addressee, never a recipient.

    ``X-Original-To`` is not among them: some servers write the failed recipient
    there, in the bounce's own headers.
    """
    found: list[str] = []
    for name in ("to", "delivered-to", "envelope-to"):
        found.extend(mime.addresses_in(mime.header(msg, name)))
    for name in ("from", "return-path", "sender", "reply-to"):
        found.extend(mime.addresses_in(mime.header(msg, name)))
    if returned is not None:
        for name in ("from", "return-path", "sender", "reply-to", "errors-to"):
            found.extend(mime.addresses_in(mime.header(returned, name)))
    return frozenset(address.lower() for address in found)


def _complaint_report(
    base: FeedbackReport, complaint: complaints.Complaint
) -> FeedbackReport:
    recipients = tuple(
        RecipientFeedback(address=address, feedback_type=complaint.feedback_type)
        for address in complaint.recipients
    )
    return _with(
        base,
        FeedbackKind.COMPLAINT,
        recipients,
        feedback_type=complaint.feedback_type,
    )


def _ses_report(
    base: FeedbackReport, notification: amazonses.SesNotification
) -> FeedbackReport:
    if notification.notification_type == "Complaint":
        recipients = tuple(
            RecipientFeedback(
                address=r.address, feedback_type=notification.feedback_type
            )
            for r in notification.recipients
        )
        return _with(
            base,
            FeedbackKind.COMPLAINT,
            recipients,
            feedback_type=notification.feedback_type,
        )

    if notification.notification_type == "Delivery":
        delivered = tuple(
            RecipientFeedback(
                address=r.address,
                bounce_code=r.status,
                smtp_code=codes.find_reply_code(r.diagnostic),
                diagnostic=r.diagnostic[:500],
                action="delivered",
            )
            for r in notification.recipients
        )
        return _with(base, FeedbackKind.DELIVERED, delivered)

    bounced = tuple(
        _bounced(r.address, r.status, r.diagnostic, r.diagnostic, r.action or "failed")
        for r in notification.recipients
    )
    kind = (
        FeedbackKind.DELAY
        if notification.bounce_type == "Transient" and _all_soft(bounced)
        else FeedbackKind.BOUNCE
    )
    return _with(base, kind, bounced)


def _all_soft(recipients: tuple[RecipientFeedback, ...]) -> bool:
    return all(r.bounce_type is BounceType.SOFT for r in recipients)


def _dsn_report(
    base: FeedbackReport, context: _Context, groups: list[dsn.DsnRecipient]
) -> FeedbackReport:
    recipients = [_dsn_recipient(group, context) for group in groups]
    delivered = tuple(r for r in recipients if r.action in _SUCCESS_ACTIONS)
    undelivered = tuple(r for r in recipients if r.action not in _SUCCESS_ACTIONS)
    delayed = tuple(r for r in undelivered if r.action == "delayed")

    # One DSN may report some recipients failed and others only delayed. It is a
    # bounce, and the delayed ones stay in it, in the report's order, with their own
    # action: whoever reads it (the recorder) must not take them for failures.
    if len(delayed) < len(undelivered):
        return _with(base, FeedbackKind.BOUNCE, undelivered)
    if delayed:
        return _with(base, FeedbackKind.DELAY, delayed)
    return _with(base, FeedbackKind.DELIVERED, delivered)


def _dsn_recipient(group: dsn.DsnRecipient, context: _Context) -> RecipientFeedback:
    action = group.action or _implied_action(group.status, context)
    segment = freetext.segment_for(
        freetext.report_part(context.report_text), group.address
    )
    return _bounced(
        group.address,
        group.status,
        group.diagnostic,
        segment,
        action,
        gateway=context.gateway,
        diagnostic_type=group.diagnostic_type,
    )


def _implied_action(status: str, context: _Context) -> str:
    if status.startswith("2"):
        return "delivered"
    if freetext.is_delay(context.subject, context.report_text):
        return "delayed"
    return "failed"


def _unstructured_report(
    base: FeedbackReport, context: _Context, returned: Message | None
) -> FeedbackReport:
    report = freetext.report_part(context.report_text)
    bounce_like = freetext.is_bounce_like(context.subject, context.from_, report)
    list_refusal = not bounce_like and lists.is_list_refusal(
        context.msg, context.subject, report
    )

    if autoreply.is_auto_reply(context.msg) and not _from_daemon(context):
        return _with(base, FeedbackKind.AUTO_REPLY, ())
    if not (bounce_like or list_refusal):
        return base

    found = freetext.find_recipients(report, set(context.excluded))
    if list_refusal:
        # A list's notice names its own address first; the addresses after it are
        # the list's command and owner addresses, not recipients.
        found = found[:1]
    if not found:
        # Exim names the failed addresses in a header even when its text does not.
        found = [
            freetext.TextRecipient(address=address, segment=report)
            for address in mime.addresses_in(
                mime.header(context.msg, "x-failed-recipients")
            )
        ]
    if not found and returned is not None:
        found = [
            freetext.TextRecipient(address=address, segment=report)
            for address in mime.addresses_in(mime.header(returned, "to"))[:1]
        ]
    if not found:
        return base

    delay = freetext.is_delay(context.subject, report)
    action = "delayed" if delay else "failed"
    single = len(found) == 1
    recipients = tuple(
        _bounced(
            item.address,
            "",
            freetext.diagnostic_of(item.segment, item.address),
            report if single else item.segment,
            action,
            gateway=context.gateway,
        )
        for item in found
    )
    return _with(base, FeedbackKind.DELAY if delay else FeedbackKind.BOUNCE, recipients)


def _from_daemon(context: _Context) -> bool:
    return freetext.is_bounce_like(context.subject, context.from_, "")


def _bounced(
    address: str,
    status: str,
    diagnostic: str,
    context_text: str,
    action: str,
    gateway: bool = False,
    diagnostic_type: str = "",
) -> RecipientFeedback:
    """One recipient of a bounce or delay, its codes and its classification."""
    witness = amazonses.remote_answer(diagnostic) or diagnostic
    text_codes = codes.find_enhanced_codes(witness) or codes.find_enhanced_codes(
        context_text[:_CLASSIFY_TEXT_MAX]
    )
    bounce_code = _best_code(status, text_codes)
    smtp_code = codes.find_reply_code(witness) or codes.find_reply_code(
        context_text[:_CLASSIFY_TEXT_MAX]
    )

    reason, bounce_type = classify.classify(
        bounce_code,
        smtp_code,
        witness,
        context_text[:_CLASSIFY_TEXT_MAX],
        gateway=gateway,
        diagnostic_type=diagnostic_type,
    )
    if action == "delayed":
        bounce_type = BounceType.SOFT

    return RecipientFeedback(
        address=address,
        bounce_code=bounce_code,
        smtp_code=smtp_code,
        diagnostic=re.sub(r"\s+", " ", diagnostic).strip()[:500],
        action=action,
        bounce_reason=reason,
        bounce_type=bounce_type,
    )


def _best_code(status: str, text_codes: list[str]) -> str:
    """The code the receiving server wrote, else the DSN ``Status``.

    A reporting MTA often fills ``Status`` with a generic or wrong code while the
    diagnostic quotes the receiving server's own answer, which is the better witness.
    A generic ``x.0.0`` from the text does not replace a precise ``Status``.
    """
    specific = codes.most_specific(text_codes)
    if not specific:
        return status
    if not status or specific[0] == status[0] or status[0] == "2":
        if specific.endswith(".0.0") and status and not status.endswith(".0.0"):
            return status
        return specific
    return status


def _with(
    base: FeedbackReport,
    kind: FeedbackKind,
    recipients: tuple[RecipientFeedback, ...],
    feedback_type: str = "",
) -> FeedbackReport:
    return FeedbackReport(
        kind=kind,
        recipients=tuple(r for r in recipients if r.address),
        original=base.original,
        return_path_addresses=base.return_path_addresses,
        subject=base.subject,
        from_=base.from_,
        feedback_type=feedback_type,
    )
