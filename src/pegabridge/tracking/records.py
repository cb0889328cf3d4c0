"""What a tracking hit needs to know: its broadcast, its link, recent clicks.

Lookups go to the database through short read connections and are cached in memory
for a little while (`CACHE_TTL_S`): a broadcast's context is a snapshot taken at send
time and links do not change once sent, so an email opened a thousand times costs one
read. Every lookup checks that the row belongs to the portal named by the token, so a
token of one portal never reaches another portal's rows.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pegabridge.store.tables import broadcasts, customers, links, tracking_hits
from pegabridge.tracking.machine import PriorClick

logger = logging.getLogger(__name__)

CACHE_TTL_S: Final = 60.0
CACHE_SIZE: Final = 50_000

LINK_KINDS: Final = ("click", "short")

# The spellings a link's `utm` JSON may use for each `google_*` field.
_UTM_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "google_source": ("google_source", "utm_source", "source"),
    "google_medium": ("google_medium", "utm_medium", "medium"),
    "google_term": ("google_term", "utm_term", "term"),
    "google_content": ("google_content", "utm_content", "content"),
    "google_campaign": ("google_campaign", "utm_campaign", "campaign"),
}


@dataclass(frozen=True, slots=True)
class BroadcastRecord:
    """One personal send: who got it, when, and the basic fields of its events."""

    id: int
    portal_id: int
    brand_id: int
    customer_id: int
    content_id: int
    sent_at: float | None
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """A tracked link as stored: `url` is the destination, byte for byte."""

    id: int
    portal_id: int
    content_id: int
    kind: str
    url: str
    alt: str
    tags: tuple[str, ...]
    utm: Mapping[str, str]


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded LRU whose entries expire `ttl_s` seconds after they were stored."""

    def __init__(self, ttl_s: float = CACHE_TTL_S, size: int = CACHE_SIZE) -> None:
        self._ttl_s = ttl_s
        self._size = size
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        """The value stored for `key`, or None when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self._ttl_s:
            del self._entries[key]
            return None

        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: K, value: V) -> None:
        """Store `value`, dropping the least recently used entry when full."""
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


class TrackingRecords:
    """Reads broadcasts, links, customers and recent clicks for the tracking routes."""

    def __init__(self, db: AsyncEngine) -> None:
        self._db = db
        self._broadcasts: TtlCache[tuple[int, int], BroadcastRecord] = TtlCache()
        self._links: TtlCache[tuple[int, int], LinkRecord] = TtlCache()
        self._link_counts: TtlCache[int, int] = TtlCache()

    async def broadcast(
        self, portal_id: int, broadcast_id: int
    ) -> BroadcastRecord | None:
        """The broadcast `broadcast_id` of portal `portal_id`, or None."""
        key = (portal_id, broadcast_id)
        cached = self._broadcasts.get(key)
        if cached is not None:
            return cached

        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    select(broadcasts).where(
                        broadcasts.c.id == broadcast_id,
                        broadcasts.c.portal_id == portal_id,
                    )
                )
            ).first()
        if row is None:
            return None

        record = BroadcastRecord(
            id=row.id,
            portal_id=row.portal_id,
            brand_id=row.brand_id,
            customer_id=row.customer_id,
            content_id=row.content_id,
            sent_at=row.sent_at,
            context=_json_object(row.context, "broadcasts.context", row.id),
        )
        # Until it is sent a broadcast may still change; afterwards it is a snapshot.
        if record.sent_at is not None:
            self._broadcasts.put(key, record)
        return record

    async def link(self, portal_id: int, link_id: int) -> LinkRecord | None:
        """The link `link_id` of portal `portal_id`, or None."""
        key = (portal_id, link_id)
        cached = self._links.get(key)
        if cached is not None:
            return cached

        async with self._db.connect() as conn:
            row = (
                await conn.execute(
                    select(links).where(
                        links.c.id == link_id, links.c.portal_id == portal_id
                    )
                )
            ).first()
        if row is None:
            return None

        record = LinkRecord(
            id=row.id,
            portal_id=row.portal_id,
            content_id=row.content_id,
            kind=row.kind,
            url=row.url,
            alt=row.alt,
            tags=_tags(row.tags, row.id),
            utm=_google_values(_json_object(row.utm, "links.utm", row.id)),
        )
        self._links.put(key, record)
        return record

    async def link_count(self, content_id: int) -> int:
        """How many tracked links the content has (0 when unknown)."""
        cached = self._link_counts.get(content_id)
        if cached is not None:
            return cached

        async with self._db.connect() as conn:
            count = await conn.scalar(
                select(func.count())
                .select_from(links)
                .where(links.c.content_id == content_id)
            )
        self._link_counts.put(content_id, int(count or 0))
        return int(count or 0)

    async def recent_clicks(
        self, broadcast: BroadcastRecord, since: float
    ) -> list[PriorClick]:
        """Committed clicks of `broadcast` since `since` (Unix seconds)."""
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(tracking_hits.c.link_id, tracking_hits.c.at).where(
                    tracking_hits.c.broadcast_id == broadcast.id,
                    tracking_hits.c.portal_id == broadcast.portal_id,
                    tracking_hits.c.at >= since,
                    tracking_hits.c.kind.in_(LINK_KINDS),
                )
            )
            return [
                PriorClick(row.link_id, seconds_since_send(row.at, broadcast) or 0.0)
                for row in rows
            ]

    async def unsubscribed_at(self, customer_id: int) -> float | None:
        """When the customer unsubscribed, or None (also for an unknown customer)."""
        async with self._db.connect() as conn:
            value = await conn.scalar(
                select(customers.c.unsubscribed_at).where(customers.c.id == customer_id)
            )
        return None if value is None else float(value)


def seconds_since_send(at: float, broadcast: BroadcastRecord) -> float | None:
    """Seconds between the send of `broadcast` and `at`, None when not sent."""
    sent_at = broadcast.sent_at
    if sent_at is None:
        stamp = broadcast.context.get("broadcast_timestamp")
        if not isinstance(stamp, int | float) or isinstance(stamp, bool) or stamp <= 0:
            return None
        sent_at = float(stamp)
    return at - sent_at


def _json_object(text: str, column: str, row_id: int) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value

    logger.error(
        "stored JSON is not an object",
        extra={"event": "tracking.bad_json", "column": column, "row_id": row_id},
    )
    return {}


def _tags(text: str, link_id: int) -> tuple[str, ...]:
    try:
        value = json.loads(text or "[]")
    except ValueError:
        value = None
    if isinstance(value, list):
        return tuple(str(tag) for tag in value if isinstance(tag, str | int | float))

    logger.error(
        "stored link tags are not a list",
        extra={"event": "tracking.bad_json", "column": "links.tags", "row_id": link_id},
    )
    return ()


def _google_values(utm: Mapping[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, spellings in _UTM_KEYS.items():
        for key in spellings:
            value = utm.get(key)
            if isinstance(value, str) and value.strip():
                values[name] = value.strip()
                break
    return values
