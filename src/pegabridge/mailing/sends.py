"""Sends: one personal email per customer, one ``broadcasts`` event per email.

A send (single, quick or campaign mail) walks its customers a page at a time. For
each page it:

1. counts and skips customers who are not mailable;
2. makes one ``broadcasts`` row per mailable customer (unique per send and customer,
   with the event's uuid and the Message-ID made once, here);
3. renders and hands each email to the transport (bounded concurrency, hourly
   throttle); a recipient refused by the relay is a bounce right away;
4. records the ``broadcasts`` (and ``bounces``) events, then marks the rows sent and
   moves the send's cursor past the page, in one transaction.

A crash anywhere resumes at the page of the cursor. A row whose event is already in
the outbox was sent and is not sent again; a row without one is sent (again, with the
same Message-ID, if the crash fell between the relay's answer and the record: the one
window SMTP cannot close). No row and no event is ever made twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Update, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pegabridge.delivery.recorder import Recorder
from pegabridge.events.build import (
    EventType,
    broadcast_context,
    broadcast_event,
    build_event,
    context_from_json,
    context_to_json,
)
from pegabridge.events.models import BaseEvent, BounceEvent, ManualValue
from pegabridge.feedback.classify import classify
from pegabridge.mailing.contents import Content, get_content
from pegabridge.mailing.customers import (
    Customer,
    customer_pages,
    get_customer,
    normalise_email,
    not_mailable_reason,
)
from pegabridge.mailing.errors import MailingError, NotFound, SendFailed
from pegabridge.mailing.render import Personal, Renderer, merged_variables
from pegabridge.mailing.transport import Accepted, Refused, Transport, TransportError
from pegabridge.metrics import observe_bounce
from pegabridge.store.tables import (
    brands,
    broadcasts,
    campaigns,
    customers,
    outbox,
    portals,
    sends,
)
from pegabridge.store.writer import GroupCommitter

log = logging.getLogger(__name__)

EVENT_TYPES: tuple[EventType, ...] = ("SINGLEMAIL", "QUICKMAIL", "CAMPAIGNMAIL")
SendState = Literal["running", "done", "failed"]


@dataclass
class SendSpec:
    """What a marketer (or a trigger) asks to send."""

    portal_id: int
    brand_id: int
    event_type: EventType
    content_id: int
    campaign_id: int = 0
    campaign_object_id: int = 0
    mailing_type: str = ""
    test_mailing: bool = False
    address_override: str = ""
    manual_options: dict[str, ManualValue] = field(default_factory=dict)
    hourly_limit: int = 0
    # None: every customer of the brand; else these customers.
    customer_ids: list[int] | None = None


@dataclass
class SendReport:
    """The counts of a send; kept in ``sends.report`` and updated per page."""

    sent: int = 0
    bounced: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    cursor: int = 0
    audience: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        """The report as stored and shown."""
        return {
            "sent": self.sent,
            "bounced": self.bounced,
            "skipped": dict(self.skipped),
            "skipped_total": sum(self.skipped.values()),
            "cursor": self.cursor,
            "audience": self.audience,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, text: str) -> SendReport:
        """A report read back from ``sends.report``."""
        data = json.loads(text or "{}")
        return cls(
            sent=int(data.get("sent", 0)),
            bounced=int(data.get("bounced", 0)),
            skipped=dict(data.get("skipped", {})),
            cursor=int(data.get("cursor", 0)),
            audience=dict(data.get("audience", {})),
            error=str(data.get("error", "")),
        )


@dataclass(frozen=True)
class SendSummary:
    """A send as the API shows it."""

    id: int
    state: str
    event_type: str
    report: SendReport

    def as_json(self) -> dict[str, Any]:
        """The summary as JSON."""
        return {
            "id": self.id,
            "state": self.state,
            "event_type": self.event_type,
            "report": self.report.as_json(),
        }


@dataclass(frozen=True)
class _SendRecord:
    id: int
    spec: SendSpec
    state: str
    report: SendReport


@dataclass(frozen=True)
class _Names:
    portal_name: str
    brand_name: str
    campaign_name: str


@dataclass
class _Row:
    broadcast_id: int
    customer: Customer
    recipient: str
    event_uuid: str
    message_id: str
    state: str
    context: dict[str, Any] = field(default_factory=dict)
    sent_at: float = 0.0
    bounce: BounceEvent | None = None


class HourlyThrottle:
    """At most ``limit`` sends in any hour (a sliding window); 0 means no limit."""

    def __init__(
        self,
        limit: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        recent: list[float] | None = None,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque(sorted(recent or [])[-limit:] if limit else [])
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait until one more send fits in the hour, and count it."""
        if self.limit <= 0:
            return
        async with self._lock:
            while True:
                now = self._clock()
                while self._sent and self._sent[0] <= now - 3600.0:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                await self._sleep(self._sent[0] + 3600.0 - now)


def bounce_uuid(event_uuid: str) -> str:
    """The uuid of the bounce event of a broadcast refused while sending.

    Derived from the broadcast's event uuid (and shaped as a version 4 UUID) so that a
    resumed send records the same bounce, which the recorder then drops.
    """
    digest = hashlib.sha256(f"{event_uuid}:smtp-bounce".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


class Sender:
    """Runs sends: renders, hands over to the transport and records the events."""

    def __init__(
        self,
        db: AsyncEngine,
        committer: GroupCommitter,
        recorder: Recorder,
        renderer: Renderer,
        transport: Transport,
        page_size: int = 500,
        concurrency: int = 16,
        message_id_domain: str = "localhost",
    ) -> None:
        self._db = db
        self._committer = committer
        self._recorder = recorder
        self._renderer = renderer
        self._transport = transport
        self._page_size = page_size
        self._concurrency = concurrency
        self._domain = message_id_domain

    # --- Creating and running sends. ---

    async def create_send(self, spec: SendSpec) -> int:
        """Check a send and store it (state ``running``); returns its id."""
        async with self._db.connect() as conn:
            await _check_spec(conn, spec)
        audience: dict[str, Any] = (
            {"all": True}
            if spec.customer_ids is None
            else {"customer_ids": sorted(set(spec.customer_ids))}
        )
        report = SendReport(audience=audience)
        return await self._committer.run(lambda c: _insert_send(c, spec, report))

    async def run_send(
        self, send_id: int, throttle: HourlyThrottle | None = None
    ) -> SendSummary:
        """Send to every remaining customer of a send; safe to call again to resume.

        Raises :class:`SendFailed` when the relay stops taking mail; the send is then
        ``failed`` and a later call continues where it stopped.
        """
        record = await self._load_send(send_id)
        if record.state == "done":
            return SendSummary(send_id, "done", record.spec.event_type, record.report)

        async with self._db.connect() as conn:
            content = await get_content(
                conn,
                record.spec.portal_id,
                record.spec.brand_id,
                record.spec.content_id,
            )
            names = await _names(conn, record.spec)
            recent = await _recent_sends(conn, send_id)
        throttle = throttle or HourlyThrottle(record.spec.hourly_limit, recent=recent)
        report = record.report
        ids = report.audience.get("customer_ids")

        log.info(
            "send started",
            extra={"event": "mailing.send_started", "send_id": send_id},
        )
        pages = customer_pages(
            self._db,
            record.spec.portal_id,
            record.spec.brand_id,
            self._page_size,
            [i for i in ids if i > report.cursor] if ids is not None else None,
        )
        async for page in pages:
            page = [c for c in page if c.id > report.cursor]
            if not page:
                continue
            try:
                await self._run_page(record, content, names, page, report, throttle)
            except TransportError as exc:
                report.error = str(exc)
                await self._committer.run(
                    lambda c: _save_report(c, send_id, report, "failed")
                )
                log.warning(
                    "send stopped: relay failed",
                    extra={"event": "mailing.send_failed", "send_id": send_id},
                )
                raise SendFailed(str(exc)) from exc

        report.error = ""
        await self._committer.run(lambda c: _save_report(c, send_id, report, "done"))
        log.info(
            "send finished",
            extra={
                "event": "mailing.send_finished",
                "send_id": send_id,
                "sent": report.sent,
                "skipped": sum(report.skipped.values()),
            },
        )
        return SendSummary(send_id, "done", record.spec.event_type, report)

    async def send_single(
        self, spec: SendSpec, customer_id: int
    ) -> tuple[int, SendSummary]:
        """One ``SINGLEMAIL`` to one customer; returns the broadcast id and summary.

        A customer who is not mailable is refused before anything is stored.
        """
        async with self._db.connect() as conn:
            customer = await get_customer(
                conn, spec.portal_id, spec.brand_id, customer_id
            )
        reason = not_mailable_reason(customer)
        if reason is not None:
            raise MailingError(
                f"customer {customer_id} is not mailable: {reason}", "customer"
            )
        spec.customer_ids = [customer_id]
        send_id = await self.create_send(spec)
        summary = await self.run_send(send_id)
        return await self.broadcast_of(send_id, customer_id), summary

    async def broadcast_of(self, send_id: int, customer_id: int) -> int:
        """The broadcast id of a customer in a send; 0 when none was made."""
        async with self._db.connect() as conn:
            found = await conn.scalar(
                select(broadcasts.c.id).where(
                    broadcasts.c.send_id == send_id,
                    broadcasts.c.customer_id == customer_id,
                )
            )
        return int(found or 0)

    async def summary(self, portal_id: int, send_id: int) -> SendSummary:
        """The state and report of a send of the portal."""
        record = await self._load_send(send_id)
        if record.spec.portal_id != portal_id:
            raise NotFound(f"there is no send {send_id}", "send_id")
        return SendSummary(send_id, record.state, record.spec.event_type, record.report)

    # --- One page. ---

    async def _run_page(
        self,
        record: _SendRecord,
        content: Content,
        names: _Names,
        page: list[Customer],
        report: SendReport,
        throttle: HourlyThrottle,
    ) -> None:
        mailable = []
        skipped: Counter[str] = Counter()
        for customer in page:
            reason = not_mailable_reason(customer)
            if reason is None:
                mailable.append(customer)
            else:
                skipped[reason] += 1

        rows = await self._committer.run(
            lambda c: self._ensure_rows(c, record, content, mailable)
        )
        await self._settle_recorded(rows)
        todo = [r for r in rows if r.state == "queued"]
        try:
            await self._deliver(record, content, names, todo, throttle)
        finally:
            # What the relay took is recorded even when it then failed: a resumed
            # send finds these events and does not send those emails again.
            await self._record([r for r in todo if r.state in ("sent", "bounced")])

        for reason, count in skipped.items():
            report.skipped[reason] = report.skipped.get(reason, 0) + count
        report.sent += sum(1 for r in rows if r.state == "sent")
        report.bounced += sum(1 for r in rows if r.state == "bounced")
        report.cursor = page[-1].id
        await self._committer.run(lambda c: _finish_page(c, record.id, rows, report))

    async def _ensure_rows(
        self,
        conn: AsyncConnection,
        record: _SendRecord,
        content: Content,
        page: list[Customer],
    ) -> list[_Row]:
        if not page:
            return []
        spec = record.spec
        now = time.time()
        values = []
        for customer in page:
            event_uuid = str(uuid.uuid4())
            values.append(
                {
                    "portal_id": spec.portal_id,
                    "brand_id": spec.brand_id,
                    "send_id": record.id,
                    "customer_id": customer.id,
                    "content_id": content.id,
                    "email_address": spec.address_override or customer.email,
                    "state": "queued",
                    "message_id": f"<{event_uuid}@{self._domain}>",
                    "event_uuid": event_uuid,
                    "created_at": now,
                }
            )
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        await conn.execute(
            dialect.insert(broadcasts)
            .values(values)
            .on_conflict_do_nothing(index_elements=["send_id", "customer_id"])
        )

        by_id = {c.id: c for c in page}
        found = await conn.execute(
            select(broadcasts).where(
                broadcasts.c.send_id == record.id,
                broadcasts.c.customer_id.in_(list(by_id)),
            )
        )
        return [
            _Row(
                broadcast_id=int(r.id),
                customer=by_id[int(r.customer_id)],
                recipient=r.email_address,
                event_uuid=r.event_uuid,
                message_id=r.message_id,
                state=r.state,
                context=context_from_json(r.context),
                sent_at=float(r.sent_at or 0.0),
            )
            for r in found
        ]

    async def _settle_recorded(self, rows: list[_Row]) -> None:
        """Rows still queued whose event is in the outbox were sent before a crash."""
        queued = {r.event_uuid: r for r in rows if r.state == "queued"}
        if not queued:
            return
        uuids = list(queued) + [bounce_uuid(u) for u in queued]
        async with self._db.connect() as conn:
            found = await conn.execute(
                select(outbox.c.uuid, outbox.c.payload).where(outbox.c.uuid.in_(uuids))
            )
            payloads = {r.uuid: json.loads(r.payload) for r in found}
        for event_uuid, row in queued.items():
            payload = payloads.get(event_uuid)
            if payload is None:
                continue
            row.context = {
                k: v
                for k, v in payload.items()
                if k not in ("uuid", "metric", "metric_timestamp", "metric_id")
            }
            row.sent_at = float(payload["metric_timestamp"])
            row.state = "bounced" if bounce_uuid(event_uuid) in payloads else "sent"

    async def _deliver(
        self,
        record: _SendRecord,
        content: Content,
        names: _Names,
        rows: list[_Row],
        throttle: HourlyThrottle,
    ) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        failures: list[TransportError] = []

        async def one(row: _Row) -> None:
            async with slots:
                if failures:
                    return
                await throttle.acquire()
                try:
                    await self._send_one(record, content, names, row)
                except TransportError as exc:
                    failures.append(exc)

        async with asyncio.TaskGroup() as group:
            for row in rows:
                group.create_task(one(row))
        if failures:
            raise failures[0]

    async def _send_one(
        self, record: _SendRecord, content: Content, names: _Names, row: _Row
    ) -> None:
        spec = record.spec
        variables = merged_variables(content, spec.manual_options)
        personal = Personal(
            portal_id=spec.portal_id,
            broadcast_id=row.broadcast_id,
            customer=row.customer,
            recipient=row.recipient,
            variables=variables,
            brand_name=names.brand_name,
            message_id=row.message_id,
        )
        email = await self._renderer.render(content, personal)
        outcome = await self._transport.send(email.envelope, email.message)

        row.sent_at = time.time()
        row.context = broadcast_context(
            portal_id=spec.portal_id,
            portal_name=names.portal_name,
            brand_id=spec.brand_id,
            brand_name=names.brand_name,
            customer_id=row.customer.id,
            external_id=row.customer.external_id,
            customer_email_address=row.customer.email,
            email_address=row.recipient,
            broadcast_id=row.broadcast_id,
            broadcast_timestamp=int(row.sent_at),
            event_type=spec.event_type,
            campaign_id=spec.campaign_id,
            campaign_name=names.campaign_name,
            campaign_object_id=spec.campaign_object_id,
            content_id=content.id,
            content_name=content.name,
            subject=email.subject,
            mailing_type=spec.mailing_type,
            test_mailing=spec.test_mailing,
            manual_options=variables,
        )
        if isinstance(outcome, Accepted):
            row.state = "sent"
            return
        row.state = "bounced"
        row.bounce = _bounce_event(row, outcome)
        log.info(
            "recipient refused by the relay",
            extra={
                "event": "mailing.recipient_refused",
                "broadcast_id": row.broadcast_id,
                "smtp_code": outcome.code,
                "command": outcome.command,
            },
        )

    async def _record(self, rows: list[_Row]) -> None:
        events: list[BaseEvent] = []
        for row in rows:
            events.append(
                broadcast_event(
                    row.context, event_uuid=row.event_uuid, sent_at=row.sent_at
                )
            )
            if row.bounce is not None:
                events.append(row.bounce)
        if events:
            await self._recorder.record(events)

    async def _load_send(self, send_id: int) -> _SendRecord:
        async with self._db.connect() as conn:
            row = (
                await conn.execute(select(sends).where(sends.c.id == send_id))
            ).first()
        if row is None:
            raise NotFound(f"there is no send {send_id}", "send_id")
        spec = SendSpec(
            portal_id=int(row.portal_id),
            brand_id=int(row.brand_id),
            event_type=row.event_type,
            content_id=int(row.content_id),
            campaign_id=int(row.campaign_id),
            campaign_object_id=int(row.campaign_object_id),
            mailing_type=row.mailing_type,
            test_mailing=bool(row.test_mailing),
            address_override=row.address_override,
            manual_options=json.loads(row.manual_options or "{}"),
            hourly_limit=int(row.hourly_limit),
        )
        return _SendRecord(
            int(row.id), spec, row.state, SendReport.from_json(row.report)
        )


def _leave_queue() -> Update:
    """A broadcast leaves the queue once, with its final state and context."""
    return (
        update(broadcasts)
        .where(broadcasts.c.id == bindparam("row_id"), broadcasts.c.state == "queued")
        .values(
            state=bindparam("new_state"),
            sent_at=bindparam("row_sent_at"),
            context=bindparam("row_context"),
        )
    )


def _leave_params(row: _Row) -> dict[str, object]:
    return {
        "row_id": row.broadcast_id,
        "new_state": row.state,
        "row_sent_at": row.sent_at,
        "row_context": context_to_json(row.context),
    }


async def _finish_bounced(
    conn: AsyncConnection, row: _Row, bounce: BounceEvent
) -> None:
    """Count a refusal at send time on the customer, once, and in the metrics.

    The counters grow in the database (not set from what this process read) so that
    a bounce mail recorded for the same customer at the same moment is not lost; the
    broadcast leaving the queue guards against counting twice when a page is retried.
    """
    left = await conn.execute(_leave_queue(), _leave_params(row))
    if not left.rowcount:
        return
    hard = 1 if bounce.bounce_type == "HARD" else 0
    await conn.execute(
        update(customers)
        .where(customers.c.id == row.customer.id)
        .values(
            bounce_count_hard=customers.c.bounce_count_hard + hard,
            bounce_count_soft=customers.c.bounce_count_soft + (1 - hard),
            updated_at=time.time(),
        )
    )
    observe_bounce(bounce.bounce_type, bounce.bounce_reason)


def _bounce_event(row: _Row, refused: Refused) -> BounceEvent:
    status = refused.enhanced_code
    reason, bounce_type = classify(
        status, str(refused.code), refused.message, f"{refused.command} refused"
    )
    hard = row.customer.bounce_count_hard + (1 if bounce_type == "HARD" else 0)
    soft = row.customer.bounce_count_soft + (1 if bounce_type == "SOFT" else 0)
    return build_event(
        BounceEvent,
        row.context,
        metric_timestamp=int(row.sent_at),
        event_uuid=bounce_uuid(row.event_uuid),
        bounce_code=status,
        bounce_reason=str(reason),
        bounce_type="HARD" if bounce_type == "HARD" else "SOFT",
        bounce_count_hard=hard,
        bounce_count_soft=soft,
    )


async def _check_spec(conn: AsyncConnection, spec: SendSpec) -> None:
    if spec.event_type not in EVENT_TYPES:
        raise MailingError(f"the send type is one of {EVENT_TYPES}", "event_type")
    await get_content(conn, spec.portal_id, spec.brand_id, spec.content_id)
    if spec.event_type == "CAMPAIGNMAIL":
        if spec.campaign_id <= 0:
            raise MailingError("a campaign mail needs a campaign", "campaign_id")
        await _campaign_name(conn, spec)
    elif spec.campaign_id or spec.campaign_object_id:
        raise MailingError("only a campaign mail has a campaign", "campaign_id")
    if spec.address_override:
        spec.address_override = normalise_email(spec.address_override)
    if spec.hourly_limit < 0:
        raise MailingError("the hourly limit is 0 (none) or more", "hourly_limit")
    for name, value in spec.manual_options.items():
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise MailingError(
                f"manual option {name!r} must be text, a number, true/false or null",
                "manual_options",
            )


async def _campaign_name(conn: AsyncConnection, spec: SendSpec) -> str:
    if spec.campaign_id == 0:
        return ""
    name = await conn.scalar(
        select(campaigns.c.name).where(
            campaigns.c.id == spec.campaign_id,
            campaigns.c.portal_id == spec.portal_id,
            campaigns.c.brand_id == spec.brand_id,
        )
    )
    if name is None:
        raise NotFound(
            f"brand {spec.brand_id} has no campaign {spec.campaign_id}", "campaign_id"
        )
    return str(name)


async def _names(conn: AsyncConnection, spec: SendSpec) -> _Names:
    portal_name = await conn.scalar(
        select(portals.c.name).where(portals.c.id == spec.portal_id)
    )
    brand_name = await conn.scalar(
        select(brands.c.name).where(
            brands.c.portal_id == spec.portal_id, brands.c.id == spec.brand_id
        )
    )
    return _Names(
        str(portal_name or ""), str(brand_name or ""), await _campaign_name(conn, spec)
    )


async def _recent_sends(conn: AsyncConnection, send_id: int) -> list[float]:
    rows = await conn.execute(
        select(broadcasts.c.sent_at).where(
            broadcasts.c.send_id == send_id,
            broadcasts.c.sent_at > time.time() - 3600.0,
        )
    )
    return [float(r.sent_at) for r in rows]


async def _insert_send(
    conn: AsyncConnection, spec: SendSpec, report: SendReport
) -> int:
    result = await conn.execute(
        sends.insert()
        .values(
            portal_id=spec.portal_id,
            brand_id=spec.brand_id,
            event_type=spec.event_type,
            content_id=spec.content_id,
            campaign_id=spec.campaign_id,
            campaign_object_id=spec.campaign_object_id,
            mailing_type=spec.mailing_type,
            test_mailing=spec.test_mailing,
            address_override=spec.address_override,
            manual_options=json.dumps(spec.manual_options, ensure_ascii=False),
            hourly_limit=spec.hourly_limit,
            state="running",
            report=json.dumps(report.as_json()),
            created_at=time.time(),
        )
        .returning(sends.c.id)
    )
    return int(result.scalar_one())


async def _save_report(
    conn: AsyncConnection, send_id: int, report: SendReport, state: SendState
) -> None:
    await conn.execute(
        update(sends)
        .where(sends.c.id == send_id)
        .values(
            report=json.dumps(report.as_json()),
            state=state,
            finished_at=time.time() if state == "done" else None,
        )
    )


async def _finish_page(
    conn: AsyncConnection, send_id: int, rows: list[_Row], report: SendReport
) -> None:
    done = [r for r in rows if r.state in ("sent", "bounced")]
    plain = [r for r in done if r.bounce is None]
    if plain:
        await conn.execute(_leave_queue(), [_leave_params(r) for r in plain])
    for row in done:
        if row.bounce is not None:
            await _finish_bounced(conn, row, row.bounce)
    await _save_report(conn, send_id, report, "running")
