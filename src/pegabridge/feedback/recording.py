"""Recording returned mail: counters, `bounces` and `complaints` events, one row each.

Every returned message leaves one ``feedback_messages`` row, keyed by the SHA-256 of
its bytes, so the same message delivered or imported twice is recorded once. What
happens to it:

* a bounce or complaint matched to a broadcast: the customer's counter is raised in the
  same transaction that claims the row (``UPDATE ... SET n = n + 1 RETURNING``), the
  event is built with the new value and stored on the row (outcome ``recording``), then
  handed to the recorder; once it is in the outbox the row becomes ``sent``. A crash in
  between leaves ``recording``, and :func:`resume_recording` (or the same message
  again) records the stored event again under its uuid, so nothing is lost or doubled;
* a second bounce (or complaint) for a broadcast that already has one: ``duplicate``,
  no counter, no event;
* a bounce or complaint that matches nothing: ``unmatched``, kept and counted, not sent;
* auto-replies, delays, delivery notices and anything else: ``ignored``, with their
  kind. A bounce that names the broadcast's recipient only as delayed is a delay.

A complaint raises ``complaint_count`` and sets ``unsubscribed_at`` (when not set), so
the customer is no longer mailable (see :mod:`pegabridge.feedback.mailability`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.delivery.recorder import Recorder
from pegabridge.events.build import build_event, email_domain
from pegabridge.events.models import (
    EVENT_MODELS,
    BaseEvent,
    BounceEvent,
    ComplaintEvent,
)
from pegabridge.feedback.matching import BroadcastMatch, MatchedBy, load_broadcast
from pegabridge.feedback.models import (
    BounceReason,
    BounceType,
    FeedbackKind,
    FeedbackReport,
    RecipientFeedback,
)
from pegabridge.metrics import observe_bounce, observe_feedback
from pegabridge.store.tables import customers, feedback_messages
from pegabridge.store.writer import GroupCommitter

logger = logging.getLogger(__name__)

_EVENT_KINDS = frozenset({FeedbackKind.BOUNCE, FeedbackKind.COMPLAINT})
_DELAYED = "delayed"
# Repeats the condition of the partial unique index, so that the planner may use it.
_HAS_SHA = text("feedback_messages.message_sha256 != ''")


class Outcome(StrEnum):
    """What became of a returned message; the value is ``feedback_messages.outcome``."""

    RECORDING = "recording"
    SENT = "sent"
    DUPLICATE = "duplicate"
    UNMATCHED = "unmatched"
    IGNORED = "ignored"


class FeedbackSink(Protocol):
    """Where feedback is written: a :class:`~pegabridge.web.runtime.Runtime` is one."""

    committer: GroupCommitter
    recorder: Recorder


@dataclass(frozen=True, slots=True)
class Recorded:
    """What recording one message did. ``seen_before``: it had been recorded already."""

    outcome: Outcome
    kind: FeedbackKind
    feedback_id: int
    broadcast_id: int | None = None
    event_uuids: tuple[str, ...] = ()
    seen_before: bool = False


@dataclass(frozen=True, slots=True)
class _Written:
    recorded: Recorded
    events: tuple[BaseEvent, ...] = ()


def message_sha256(raw: bytes) -> str:
    """The key that makes one message one record, whatever path it came by."""
    return hashlib.sha256(raw).hexdigest()


async def record_feedback(
    sink: FeedbackSink,
    report: FeedbackReport,
    match: BroadcastMatch | None,
    *,
    sha256: str,
    source: str,
    received_at: float | None = None,
    event_uuid: str | None = None,
) -> Recorded:
    """Record one parsed message; returns once its event (if any) is in the outbox.

    ``event_uuid`` is the uuid of the event when the caller has one already (a send
    that may be resumed); by default a new one is made.
    """
    now = time.time() if received_at is None else received_at
    report = _as_it_concerns(report, match)

    async def operation(conn: AsyncConnection) -> _Written:
        return await _write(conn, report, match, sha256, source, now, event_uuid)

    written = await sink.committer.run(operation)
    recorded = await _finish(sink, written)
    if not recorded.seen_before:
        _count(recorded, written.events)

    logger.info(
        "feedback message recorded",
        extra={
            "event": "feedback.recorded",
            "kind": recorded.kind.value,
            "outcome": recorded.outcome.value,
            "broadcast_id": recorded.broadcast_id,
            "source": source,
            "seen_before": recorded.seen_before,
        },
    )
    return recorded


async def record_bounce(
    sink: FeedbackSink,
    broadcast_id: int,
    bounce_code: str,
    smtp_code: str,
    bounce_reason: BounceReason,
    bounce_type: BounceType,
    diagnostic: str = "",
    *,
    source: str = "smtp-refusal",
    received_at: float | None = None,
    event_uuid: str | None = None,
) -> Recorded:
    """Record a bounce known without a returned mail, e.g. a recipient refused in the
    SMTP conversation of the send. Counters and the event as for a returned bounce;
    calling it again for the same broadcast records nothing more.

    ``bounce_reason`` and ``bounce_type`` can come from
    :func:`pegabridge.feedback.classify.classify` on the server's reply.
    """

    async def load(conn: AsyncConnection) -> BroadcastMatch | None:
        return await load_broadcast(conn, broadcast_id, MatchedBy.SMTP)

    match = await sink.committer.run(load)
    address = match.email_address if match is not None else ""
    report = FeedbackReport(
        kind=FeedbackKind.BOUNCE,
        recipients=(
            RecipientFeedback(
                address=address,
                bounce_code=bounce_code,
                smtp_code=smtp_code,
                diagnostic=diagnostic[:500],
                action="failed",
                bounce_reason=bounce_reason,
                bounce_type=bounce_type,
            ),
        ),
    )
    key = message_sha256(f"pegabridge:{source}:{broadcast_id}".encode())
    return await record_feedback(
        sink,
        report,
        match,
        sha256=key,
        source=source,
        received_at=received_at,
        event_uuid=event_uuid,
    )


async def resume_recording(sink: FeedbackSink) -> int:
    """Record the events of messages left half-recorded by a crash; how many."""

    async def pending(conn: AsyncConnection) -> list[tuple[int, str]]:
        rows = await conn.execute(
            select(feedback_messages.c.id, feedback_messages.c.events).where(
                feedback_messages.c.outcome == Outcome.RECORDING.value
            )
        )
        return [(int(r.id), str(r.events)) for r in rows]

    rows = await sink.committer.run(pending)
    for feedback_id, stored in rows:
        await sink.recorder.record(list(_stored_events(stored)))
        await _mark_sent_by(sink, feedback_id)
    return len(rows)


# --- One message, one transaction. ---


async def _write(
    conn: AsyncConnection,
    report: FeedbackReport,
    match: BroadcastMatch | None,
    sha256: str,
    source: str,
    now: float,
    event_uuid: str | None,
) -> _Written:
    seen = await _seen(conn, sha256, report.kind)
    if seen is not None:
        return seen

    row = _row(report, match, sha256, source, now)
    if report.kind not in _EVENT_KINDS:
        return await _insert_final(conn, row, Outcome.IGNORED, report.kind)
    if match is None:
        return await _insert_final(conn, row, Outcome.UNMATCHED, report.kind)

    feedback_id = await _insert(conn, {**row, "outcome": Outcome.RECORDING.value})
    if feedback_id is None:
        return await _insert_final(conn, row, Outcome.DUPLICATE, report.kind)

    recipient = _recipient_for(report, match)
    event = await _event_for(conn, report, recipient, match, now, event_uuid)
    await conn.execute(
        update(feedback_messages)
        .where(feedback_messages.c.id == feedback_id)
        .values(events=json.dumps([event.to_json()]), recipient=recipient.address)
    )
    recorded = Recorded(
        Outcome.RECORDING, report.kind, feedback_id, match.broadcast_id, (event.uuid,)
    )
    return _Written(recorded, (event,))


async def _seen(
    conn: AsyncConnection, sha256: str, kind: FeedbackKind
) -> _Written | None:
    row = (
        await conn.execute(
            select(
                feedback_messages.c.id,
                feedback_messages.c.outcome,
                feedback_messages.c.broadcast_id,
                feedback_messages.c.events,
            ).where(feedback_messages.c.message_sha256 == sha256, _HAS_SHA)
        )
    ).first()
    if row is None:
        return None

    events = _stored_events(row.events) if row.outcome == Outcome.RECORDING else ()
    recorded = Recorded(
        Outcome(row.outcome),
        kind,
        int(row.id),
        row.broadcast_id,
        tuple(e.uuid for e in events),
        seen_before=True,
    )
    return _Written(recorded, events)


def _row(
    report: FeedbackReport,
    match: BroadcastMatch | None,
    sha256: str,
    source: str,
    now: float,
) -> dict[str, Any]:
    summary = {
        **report.to_json_dict(),
        "subject": report.subject[:300],
        "from": report.from_[:300],
        "matched_by": match.matched_by.value if match is not None else None,
    }
    return {
        "received_at": now,
        "kind": report.kind.value,
        "source": source[:32],
        "broadcast_id": match.broadcast_id if match is not None else None,
        "customer_id": match.customer_id if match is not None else 0,
        "summary": json.dumps(summary, ensure_ascii=False),
        "message_sha256": sha256,
    }


async def _insert(conn: AsyncConnection, values: dict[str, Any]) -> int | None:
    """Insert a row unless it collides with a unique index; its id or None."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(feedback_messages)
        .values(**values)
        .on_conflict_do_nothing()
        .returning(feedback_messages.c.id)
    )
    found = (await conn.execute(statement)).scalar_one_or_none()
    return int(found) if found is not None else None


async def _insert_final(
    conn: AsyncConnection, row: dict[str, Any], outcome: Outcome, kind: FeedbackKind
) -> _Written:
    feedback_id = await _insert(conn, {**row, "outcome": outcome.value})
    broadcast_id = row["broadcast_id"]
    return _Written(Recorded(outcome, kind, feedback_id or 0, broadcast_id))


async def _mark_sent(conn: AsyncConnection, feedback_id: int) -> None:
    await conn.execute(
        update(feedback_messages)
        .where(
            feedback_messages.c.id == feedback_id,
            feedback_messages.c.outcome == Outcome.RECORDING.value,
        )
        .values(outcome=Outcome.SENT.value)
    )


async def _mark_sent_by(sink: FeedbackSink, feedback_id: int) -> None:
    async def operation(conn: AsyncConnection) -> None:
        await _mark_sent(conn, feedback_id)

    await sink.committer.run(operation)


async def _finish(sink: FeedbackSink, written: _Written) -> Recorded:
    """Hand the built events to the recorder, then mark the message sent."""
    recorded = written.recorded
    if recorded.outcome is not Outcome.RECORDING:
        return recorded

    await sink.recorder.record(list(written.events))
    await _mark_sent_by(sink, recorded.feedback_id)
    return Recorded(
        Outcome.SENT,
        recorded.kind,
        recorded.feedback_id,
        recorded.broadcast_id,
        recorded.event_uuids,
        recorded.seen_before,
    )


def _count(recorded: Recorded, events: Sequence[BaseEvent]) -> None:
    observe_feedback(recorded.kind.value, recorded.outcome.value)
    for event in events:
        if isinstance(event, BounceEvent):
            observe_bounce(event.bounce_type, event.bounce_reason)


def _stored_events(stored: str) -> tuple[BaseEvent, ...]:
    events = []
    for payload in json.loads(stored or "[]"):
        metric = json.loads(payload)["metric"]
        events.append(EVENT_MODELS[metric].model_validate_json(payload))
    return tuple(events)


# --- Counters and events. ---


def _as_it_concerns(
    report: FeedbackReport, match: BroadcastMatch | None
) -> FeedbackReport:
    """``report`` as it concerns the matched broadcast.

    A bounce may also name recipients whose delivery was only delayed (a DSN with
    mixed actions); when the broadcast's own recipient is one of them, the message
    is a delay for this broadcast, not a bounce.
    """
    if match is None or report.kind is not FeedbackKind.BOUNCE:
        return report
    if _recipient_for(report, match).action != _DELAYED:
        return report
    return dataclasses.replace(report, kind=FeedbackKind.DELAY)


def _recipient_for(report: FeedbackReport, match: BroadcastMatch) -> RecipientFeedback:
    """The reported recipient the broadcast went to, else the first one that failed,
    else the first one reported."""
    wanted = match.email_address.lower()
    for recipient in report.recipients:
        if recipient.address.lower() == wanted:
            return recipient
    for recipient in report.recipients:
        if recipient.action != _DELAYED:
            return recipient
    if report.recipients:
        return report.recipients[0]
    return RecipientFeedback(address=match.email_address)


async def _event_for(
    conn: AsyncConnection,
    report: FeedbackReport,
    recipient: RecipientFeedback,
    match: BroadcastMatch,
    now: float,
    event_uuid: str | None,
) -> BaseEvent:
    if report.kind is FeedbackKind.COMPLAINT:
        complaints = await _count_complaint(conn, match.customer_id, now)
        return _build(
            ComplaintEvent, match, now, event_uuid, {"complaints": complaints}
        )

    bounce_type = recipient.bounce_type or BounceType.SOFT
    hard, soft = await _count_bounce(conn, match.customer_id, bounce_type, now)
    reason = recipient.bounce_reason or BounceReason.OTHER
    return _build(
        BounceEvent,
        match,
        now,
        event_uuid,
        {
            "bounce_code": recipient.bounce_code,
            "bounce_reason": reason.value,
            "bounce_type": bounce_type.value,
            "bounce_count_hard": hard,
            "bounce_count_soft": soft,
        },
    )


async def _count_bounce(
    conn: AsyncConnection, customer_id: int, bounce_type: BounceType, now: float
) -> tuple[int, int]:
    """Raise the customer's hard or soft count; the counts after it."""
    column = (
        customers.c.bounce_count_hard
        if bounce_type is BounceType.HARD
        else customers.c.bounce_count_soft
    )
    row = (
        await conn.execute(
            update(customers)
            .where(customers.c.id == customer_id)
            .values({column: column + 1, customers.c.updated_at: now})
            .returning(customers.c.bounce_count_hard, customers.c.bounce_count_soft)
        )
    ).first()
    if row is None:
        logger.warning(
            "bounced customer not found",
            extra={"event": "feedback.customer_missing", "customer_id": customer_id},
        )
        return 0, 0
    return int(row.bounce_count_hard), int(row.bounce_count_soft)


async def _count_complaint(conn: AsyncConnection, customer_id: int, now: float) -> int:
    """Raise the complaint count and stop mailing; the count after it."""
    found = (
        await conn.execute(
            update(customers)
            .where(customers.c.id == customer_id)
            .values(
                complaint_count=customers.c.complaint_count + 1,
                unsubscribed_at=func.coalesce(customers.c.unsubscribed_at, now),
                updated_at=now,
            )
            .returning(customers.c.complaint_count)
        )
    ).scalar_one_or_none()
    if found is None:
        logger.warning(
            "complaining customer not found",
            extra={"event": "feedback.customer_missing", "customer_id": customer_id},
        )
        return 0
    return int(found)


def _build(
    model: type[BaseEvent],
    match: BroadcastMatch,
    now: float,
    event_uuid: str | None,
    extra: dict[str, Any],
) -> BaseEvent:
    """An event of the broadcast: its stored context, the row's ids, then ``extra``.

    A stored context that does not fit the model any more (a field renamed since the
    send) falls back to the ids alone rather than losing the event.
    """
    context = {
        "email_address": match.email_address,
        "email_domain": email_domain(match.email_address),
        **match.context,
        "portal_id": match.portal_id,
        "brand_id": match.brand_id,
        "broadcast_id": match.broadcast_id,
        "customer_id": match.customer_id,
    }
    try:
        return build_event(
            model, context, metric_timestamp=int(now), event_uuid=event_uuid, **extra
        )
    except ValidationError:
        logger.warning(
            "broadcast context does not fit the event",
            extra={
                "event": "feedback.context_refused",
                "broadcast_id": match.broadcast_id,
            },
        )
    ids = {key: context[key] for key in ("portal_id", "brand_id", "broadcast_id")}
    return build_event(
        model,
        {**ids, "customer_id": match.customer_id},
        metric_timestamp=int(now),
        event_uuid=event_uuid,
        **extra,
    )
