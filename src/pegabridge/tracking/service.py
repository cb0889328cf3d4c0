"""Turning tracking hits into events: opens, clicks, unsubscribes, conversions.

Each public method takes a token from a URL and what the request told (`Request`),
checks the token, loads the broadcast (and link), decides whether a machine made the
hit, builds the event with the broadcast's context and writes it through the
`HitWriter`: it returns only after the hit has committed. Anything that does not check
out raises `NotFound`, before anything is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from pydantic import ValidationError

from pegabridge.events.build import base_fields_from_context
from pegabridge.events.models import (
    EVENT_MODELS,
    BaseEvent,
    ClickEvent,
    ConversionEvent,
    OpenEvent,
    ShortLinkEvent,
    UnsubscribeEvent,
)
from pegabridge.metrics import observe_tracking_hit
from pegabridge.tracking import machine
from pegabridge.tracking.agents import classify_agent
from pegabridge.tracking.conversions import Conversion
from pegabridge.tracking.hits import (
    HitKind,
    HitRow,
    HitWriter,
    PendingHit,
    Written,
    stable_uuid,
)
from pegabridge.tracking.records import (
    BroadcastRecord,
    LinkRecord,
    TrackingRecords,
    seconds_since_send,
)
from pegabridge.tracking.tokens import InvalidToken, KeyRing, TokenKind, TokenPayload
from pegabridge.tracking.utm import google_fields

logger = logging.getLogger(__name__)

CLICK_WINDOW_S: Final = 5.0
"""How far back other clicks of an email are looked at (above the timing windows)."""

_METRIC_OF: Final = {model: metric for metric, model in EVENT_MODELS.items()}

# Schemes a redirect never goes to, whatever was stored.
_REFUSED_SCHEMES: Final = ("javascript:", "data:", "vbscript:")


class NotFound(Exception):
    """The token is not ours, or names nothing that exists; nothing was recorded."""


@dataclass(frozen=True, slots=True)
class Request:
    """What a hit's HTTP request tells: `headers` holds the prefetch headers only."""

    method: str
    user_agent: str
    client_ip: str
    headers: Mapping[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Redirect:
    """Where a click goes, and the token that attributes a later conversion to it."""

    url: str
    conversion_token: str
    written: Written


@dataclass(frozen=True, slots=True)
class UnsubscribePage:
    """What the confirmation page shows."""

    brand_name: str
    masked_address: str
    already_unsubscribed: bool


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The outcome of an unsubscribe POST: `newly` is false when it was done before."""

    newly: bool
    written: Written


class TrackingService:
    """The tracking logic of one process; built once and shared by the routes."""

    def __init__(
        self,
        ring: KeyRing,
        detector: machine.MachineDetector,
        records: TrackingRecords,
        writer: HitWriter,
        uuid_secret: bytes,
    ) -> None:
        self.ring = ring
        self.detector = detector
        self.records = records
        self.writer = writer
        self._uuid_secret = uuid_secret
        self._recent = RecentClicks()

    async def open(self, token: str, request: Request) -> Written:
        """Record the open pixel of the broadcast named by `token`."""
        payload = self._verify(token, TokenKind.OPEN)
        broadcast = await self._broadcast(payload)

        verdict = self.detector.classify(
            machine.Hit(
                kind=machine.HitKind.OPEN,
                user_agent=request.user_agent,
                client_ip=request.client_ip,
                method=request.method,
                headers=request.headers,
                seconds_since_send=seconds_since_send(request.at, broadcast),
            )
        )
        event = build_event(
            OpenEvent, broadcast, request.at, **_agent_fields(request, verdict)
        )
        return await self._write(HitKind.OPEN, broadcast, request, verdict, event)

    async def click(self, token: str, request: Request, kind: HitKind) -> Redirect:
        """Record a click on a template link (`CLICK`) or short link (`SHORT`)."""
        payload = self._verify(token, TokenKind.CLICK)
        # Independent lookups run together: one round of reads, not three.
        broadcast, link, committed = await asyncio.gather(
            self.records.broadcast(payload.portal_id, payload.broadcast_id),
            self.records.link(payload.portal_id, payload.link_id),
            self.records.recent_clicks(
                payload.portal_id, payload.broadcast_id, request.at - CLICK_WINDOW_S
            ),
        )
        if broadcast is None:
            _refuse("broadcast", payload)
        if link is None or link.kind != kind.value or not _safe_destination(link.url):
            _refuse("link", payload, kind=kind.value)

        verdict = await self._click_verdict(broadcast, link, committed, request)
        model = ClickEvent if kind is HitKind.CLICK else ShortLinkEvent
        event = build_event(
            model,
            broadcast,
            request.at,
            **_agent_fields(request, verdict),
            **_link_fields(link),
        )
        written = await self._write(kind, broadcast, request, verdict, event, link.id)

        conversion = TokenPayload(
            TokenKind.CONVERSION, payload.portal_id, payload.broadcast_id, link.id
        )
        return Redirect(link.url, self.ring.sign(conversion), written)

    async def unsubscribe_page(self, token: str) -> UnsubscribePage:
        """What the confirmation page of an unsubscribe link shows; changes nothing."""
        payload = self._verify(token, TokenKind.UNSUBSCRIBE)
        broadcast = await self._broadcast(payload)
        unsubscribed_at = await self.records.unsubscribed_at(broadcast.customer_id)

        return UnsubscribePage(
            brand_name=str(broadcast.context.get("brand_name") or ""),
            masked_address=mask_address(_address_of(broadcast)),
            already_unsubscribed=unsubscribed_at is not None,
        )

    async def unsubscribe(self, token: str, request: Request) -> Unsubscribed:
        """Unsubscribe the customer of the broadcast; a second time records no event."""
        payload = self._verify(token, TokenKind.UNSUBSCRIBE)
        broadcast = await self._broadcast(payload)
        row = _row(HitKind.UNSUBSCRIBE, broadcast, request, machine.HUMAN)
        if await self.records.unsubscribed_at(broadcast.customer_id) is not None:
            written = await self.writer.write(PendingHit(row))
            return Unsubscribed(newly=False, written=written)

        # One uuid per broadcast: two POSTs racing still give one event.
        event_uuid = stable_uuid(
            self._uuid_secret, "unsubscribe", broadcast.portal_id, broadcast.id
        )
        event = build_event(UnsubscribeEvent, broadcast, request.at, uuid=event_uuid)
        written = await self.writer.write(
            PendingHit(
                _with_uuid(row, event_uuid),
                event,
                unsubscribe_customer=broadcast.customer_id,
            )
        )
        logger.info(
            "customer unsubscribed",
            extra={
                "event": "tracking.unsubscribed",
                "broadcast_id": broadcast.id,
                "customer_id": broadcast.customer_id,
                "event_uuid": event_uuid,
                "state": written.state,
            },
        )
        return Unsubscribed(newly=written.state != "duplicate", written=written)

    async def convert(
        self,
        token: str,
        conversion: Conversion,
        request: Request,
        portal_id: int | None = None,
    ) -> Written:
        """Record a conversion attributed by a conversion or click token.

        `portal_id`, when given (the API key's portal), must be the token's portal.
        With a `reference`, the same conversion reported again is one event.
        """
        payload = self._verify(token, TokenKind.CONVERSION, TokenKind.CLICK)
        if portal_id is not None and payload.portal_id != portal_id:
            _refuse("portal", payload)
        broadcast = await self._broadcast(payload)

        event_uuid = str(uuid.uuid4())
        if conversion.reference:
            event_uuid = stable_uuid(
                self._uuid_secret,
                "conversion",
                broadcast.portal_id,
                broadcast.id,
                conversion.name,
                conversion.reference,
            )
        event = build_event(
            ConversionEvent,
            broadcast,
            request.at,
            uuid=event_uuid,
            conversion_name=conversion.name,
            conversion_value=conversion.value,
            conversion_currency=conversion.currency,
            conversion_reference=conversion.reference,
            link_id=payload.link_id,
        )
        row = _row(HitKind.CONVERSION, broadcast, request, machine.HUMAN)
        row = _with_uuid(row, event_uuid, link_id=payload.link_id)
        return await self.writer.write(PendingHit(row, event))

    def _verify(self, token: str, *kinds: TokenKind) -> TokenPayload:
        try:
            payload = self.ring.verify(token)
        except InvalidToken as exc:
            logger.debug(
                "token refused",
                extra={"event": "tracking.bad_token", "cause": str(exc)},
            )
            raise NotFound("no such tracking link") from None
        if payload.kind not in kinds:
            _refuse("kind", payload)
        return payload

    async def _broadcast(self, payload: TokenPayload) -> BroadcastRecord:
        broadcast = await self.records.broadcast(
            payload.portal_id, payload.broadcast_id
        )
        if broadcast is None:
            _refuse("broadcast", payload)
        return broadcast

    async def _click_verdict(
        self,
        broadcast: BroadcastRecord,
        link: LinkRecord,
        committed: list[tuple[int, float]],
        request: Request,
    ) -> machine.Verdict:
        link_count = await self.records.link_count(link.content_id)

        # From here to `remember` nothing awaits: concurrent clicks see each other.
        elapsed_s = seconds_since_send(request.at, broadcast)
        since = request.at - CLICK_WINDOW_S
        prior = [
            machine.PriorClick(link_id, seconds_since_send(at, broadcast) or 0.0)
            for link_id, at in committed
        ]
        recent = self._recent.merged(broadcast, prior, since)
        verdict = self.detector.classify(
            machine.Hit(
                kind=machine.HitKind.CLICK,
                user_agent=request.user_agent,
                client_ip=request.client_ip,
                method=request.method,
                headers=request.headers,
                seconds_since_send=elapsed_s,
                link_id=link.id,
                recent_clicks=recent,
                link_count=link_count,
            )
        )
        self._recent.remember(broadcast, link.id, request.at)
        return verdict

    async def _write(
        self,
        kind: HitKind,
        broadcast: BroadcastRecord,
        request: Request,
        verdict: machine.Verdict,
        event: BaseEvent,
        link_id: int = 0,
    ) -> Written:
        row = _with_uuid(
            _row(kind, broadcast, request, verdict), event.uuid, link_id=link_id
        )
        human = not verdict.machine_generated
        written = await self.writer.write(
            PendingHit(
                row,
                event,
                reset_soft_bounces_of=broadcast.customer_id if human else 0,
            )
        )
        _log_hit(row, verdict)
        observe_tracking_hit(kind.value, verdict.machine_generated, verdict.reason)
        return written


class RecentClicks:
    """Clicks this process saw in the last seconds, per broadcast.

    Link scanners follow every link of an email at once; those clicks are still being
    written when the next one is judged, so the committed clicks alone would miss them.
    """

    MAX_BROADCASTS: Final = 20_000
    KEEP_S: Final = 30.0

    def __init__(self) -> None:
        self._clicks: dict[int, list[tuple[int, float]]] = {}

    def merged(
        self,
        broadcast: BroadcastRecord,
        committed: list[machine.PriorClick],
        since: float,
    ) -> list[machine.PriorClick]:
        """`committed` plus the clicks seen here since `since`, each once."""
        seen = {
            (click.link_id, round(click.seconds_since_send, 6)) for click in committed
        }
        merged = list(committed)
        for link_id, at in self._clicks.get(broadcast.id, ()):
            elapsed_s = seconds_since_send(at, broadcast)
            if at < since or elapsed_s is None:
                continue
            if (link_id, round(elapsed_s, 6)) not in seen:
                merged.append(machine.PriorClick(link_id, elapsed_s))
        return merged

    def remember(self, broadcast: BroadcastRecord, link_id: int, at: float) -> None:
        """Keep a click for the next judgements of the same broadcast."""
        kept = [
            c for c in self._clicks.pop(broadcast.id, []) if at - c[1] < self.KEEP_S
        ]
        kept.append((link_id, at))
        self._clicks[broadcast.id] = kept[-64:]
        if len(self._clicks) > self.MAX_BROADCASTS:
            del self._clicks[next(iter(self._clicks))]


def build_event(
    model: type[BaseEvent], broadcast: BroadcastRecord, at: float, **fields: Any
) -> BaseEvent:
    """An event of `model` with the broadcast's context and the hit's `fields`.

    The ids the broadcast row holds win over its context. A context that does not fit
    the model (a stored mistake) is logged and replaced by the row's ids, so a hit is
    still recorded.
    """
    ids = {
        "portal_id": broadcast.portal_id,
        "brand_id": broadcast.brand_id,
        "broadcast_id": broadcast.id,
    }
    defaults = {
        "customer_id": broadcast.customer_id,
        "content_id": broadcast.content_id,
    }
    context = base_fields_from_context(dict(broadcast.context))
    metric = _METRIC_OF[model]
    base = {
        "uuid": str(uuid.uuid4()),
        "metric": metric,
        "metric_timestamp": int(at),
    }
    try:
        return model.model_validate(
            {**base, **defaults, **context, **ids, **fields}, strict=False
        )
    except ValidationError as exc:
        logger.error(
            "broadcast context does not fit the event",
            extra={
                "event": "tracking.bad_context",
                "broadcast_id": broadcast.id,
                "errors": exc.error_count(),
            },
        )
        return model.model_validate({**base, **defaults, **ids, **fields}, strict=False)


def mask_address(address: str) -> str:
    """`jane.doe@example.com` as `j*******@example.com`, for a page anyone may see."""
    local, at, domain = address.partition("@")
    if not at:
        return ""
    return f"{local[:1]}{'*' * max(len(local) - 1, 3)}@{domain}"


def _address_of(broadcast: BroadcastRecord) -> str:
    for key in ("email_address", "customer_email_address"):
        value = broadcast.context.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _agent_fields(request: Request, verdict: machine.Verdict) -> dict[str, Any]:
    agent = classify_agent(request.user_agent)
    return {
        "user_agent": request.user_agent,
        "os": agent.os,
        "browser": agent.browser,
        "machine_generated": verdict.machine_generated,
    }


def _link_fields(link: LinkRecord) -> dict[str, Any]:
    return {
        "link_id": link.id,
        "url": link.url,
        "alt": link.alt,
        "tags": list(link.tags),
        **google_fields(link.url, link.utm).as_dict(),
    }


def _row(
    kind: HitKind,
    broadcast: BroadcastRecord,
    request: Request,
    verdict: machine.Verdict,
) -> HitRow:
    reason = verdict.reason
    if verdict.detail:
        reason = f"{reason}:{verdict.detail}"
    return HitRow(
        portal_id=broadcast.portal_id,
        broadcast_id=broadcast.id,
        kind=kind,
        at=request.at,
        client_ip=request.client_ip,
        method=request.method,
        user_agent=request.user_agent,
        machine_generated=verdict.machine_generated,
        machine_reason=reason,
    )


def _with_uuid(row: HitRow, event_uuid: str, link_id: int = 0) -> HitRow:
    return dataclasses.replace(row, event_uuid=event_uuid, link_id=link_id)


def _safe_destination(url: str) -> bool:
    # A stored URL with a control character would split the Location header.
    if not url or any(ord(char) < 0x20 or ord(char) == 0x7F for char in url):
        return False
    return not url.strip().lower().startswith(_REFUSED_SCHEMES)


def _refuse(what: str, payload: TokenPayload, **fields: Any) -> NoReturn:
    logger.info(
        "tracking hit refused",
        extra={
            "event": "tracking.refused",
            "cause": what,
            "portal_id": payload.portal_id,
            "broadcast_id": payload.broadcast_id,
            "link_id": payload.link_id,
            **fields,
        },
    )
    raise NotFound("no such tracking link")


def _log_hit(row: HitRow, verdict: machine.Verdict) -> None:
    fields = {
        "kind": row.kind.value,
        "broadcast_id": row.broadcast_id,
        "link_id": row.link_id,
        "event_uuid": row.event_uuid,
        "method": row.method,
    }
    if verdict.machine_generated:
        logger.info(
            "machine hit flagged",
            extra={
                "event": "tracking.machine_hit",
                "reason": verdict.reason,
                "detail": verdict.detail,
                "client_ip": row.client_ip,
                **fields,
            },
        )
        return
    logger.debug("hit recorded", extra={"event": "tracking.hit", **fields})
