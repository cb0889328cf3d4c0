"""What a tracking hit needs to know: its broadcast, its link, recent clicks.

Lookups go to the database through short read connections and are cached in memory
for a little while (`CACHE_TTL_S`): a broadcast's context is a snapshot taken at send
time and links do not change once sent, so an email opened a thousand times costs one
read. Every lookup checks that the row belongs to the portal named by the token, so a
token of one portal never reaches another portal's rows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pegabridge.store.tables import broadcasts, customers, links, tracking_hits

logger = logging.getLogger(__name__)

CACHE_TTL_S: Final = 60.0
CACHE_SIZE: Final = 50_000
MAX_KEYS_PER_QUERY: Final = 500

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


class BatchLoader(Generic[K, V]):
    """Loads rows by key, many keys per query.

    Lookups that arrive while a query runs wait for the next one, which then fetches
    all their keys at once (`WHERE id IN (...)`): under load one read serves hundreds
    of hits, and the connection pool is never stormed. Waiters of one key share a
    result.
    """

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]],
        max_keys: int = MAX_KEYS_PER_QUERY,
    ) -> None:
        self._fetch = fetch
        self._max_keys = max_keys
        self._waiting: dict[K, asyncio.Future[V | None]] = {}
        self._flusher: asyncio.Task[None] | None = None

    async def get(self, key: K) -> V | None:
        """The row of `key`, or None when there is none."""
        future = self._waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiting[key] = future
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="batch-loader")
        # Shielded: a caller that gives up must not cancel the others' result.
        return await asyncio.shield(future)

    async def _flush(self) -> None:
        while self._waiting:
            keys = list(self._waiting)[: self._max_keys]
            batch = {key: self._waiting.pop(key) for key in keys}
            try:
                found = await self._fetch(keys)
            except Exception as exc:
                for future in batch.values():
                    if not future.done():
                        future.set_exception(exc)
                        future.exception()  # retrieved: waiters may be gone
                continue
            for key, future in batch.items():
                if not future.done():
                    future.set_result(found.get(key))


class TrackingRecords:
    """Reads broadcasts, links, customers and recent clicks for the tracking routes.

    `click_window_s` is how far back `recent_clicks` looks.
    """

    def __init__(self, db: AsyncEngine, click_window_s: float = 5.0) -> None:
        self._db = db
        self._click_window_s = click_window_s
        self._broadcasts: TtlCache[tuple[int, int], BroadcastRecord] = TtlCache()
        self._links: TtlCache[tuple[int, int], LinkRecord] = TtlCache()
        self._link_counts: TtlCache[int, int] = TtlCache()
        self._broadcast_loader = BatchLoader(self._fetch_broadcasts)
        self._link_loader = BatchLoader(self._fetch_links)
        self._count_loader = BatchLoader(self._fetch_link_counts)
        self._click_loader = BatchLoader(self._fetch_recent_clicks)

    async def broadcast(
        self, portal_id: int, broadcast_id: int
    ) -> BroadcastRecord | None:
        """The broadcast `broadcast_id` of portal `portal_id`, or None."""
        key = (portal_id, broadcast_id)
        record = self._broadcasts.get(key)
        if record is None:
            record = await self._broadcast_loader.get(key)
        # Until it is sent a broadcast may still change; afterwards it is a snapshot.
        if record is not None and record.sent_at is not None:
            self._broadcasts.put(key, record)
        return record

    async def link(self, portal_id: int, link_id: int) -> LinkRecord | None:
        """The link `link_id` of portal `portal_id`, or None."""
        key = (portal_id, link_id)
        record = self._links.get(key)
        if record is None:
            record = await self._link_loader.get(key)
        if record is not None:
            self._links.put(key, record)
        return record

    async def link_count(self, content_id: int) -> int:
        """How many tracked links the content has (0 when unknown)."""
        count = self._link_counts.get(content_id)
        if count is None:
            count = await self._count_loader.get(content_id) or 0
            self._link_counts.put(content_id, count)
        return count

    async def recent_clicks(
        self, portal_id: int, broadcast_id: int, since: float
    ) -> list[tuple[int, float]]:
        """Committed clicks of a broadcast since `since` (at most `click_window_s`).

        Each is `(link_id, at)` with `at` in Unix seconds.
        """
        clicks = await self._click_loader.get((portal_id, broadcast_id))
        return [(link_id, at) for link_id, at in clicks or () if at >= since]

    async def unsubscribed_at(self, customer_id: int) -> float | None:
        """When the customer unsubscribed, or None (also for an unknown customer)."""
        async with self._db.connect() as conn:
            value = await conn.scalar(
                select(customers.c.unsubscribed_at).where(customers.c.id == customer_id)
            )
        return None if value is None else float(value)

    async def _fetch_broadcasts(
        self, keys: list[tuple[int, int]]
    ) -> dict[tuple[int, int], BroadcastRecord]:
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(broadcasts).where(broadcasts.c.id.in_({k[1] for k in keys}))
            )
            found = {(row.portal_id, row.id): _broadcast_of(row) for row in rows}
        # A token naming another portal's broadcast finds nothing.
        return {key: found[key] for key in keys if key in found}

    async def _fetch_links(
        self, keys: list[tuple[int, int]]
    ) -> dict[tuple[int, int], LinkRecord]:
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(links).where(links.c.id.in_({k[1] for k in keys}))
            )
            found = {(row.portal_id, row.id): _link_of(row) for row in rows}
        return {key: found[key] for key in keys if key in found}

    async def _fetch_link_counts(self, content_ids: list[int]) -> dict[int, int]:
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(links.c.content_id, func.count())
                .where(links.c.content_id.in_(content_ids))
                .group_by(links.c.content_id)
            )
            return {int(row[0]): int(row[1]) for row in rows}

    async def _fetch_recent_clicks(
        self, keys: list[tuple[int, int]]
    ) -> dict[tuple[int, int], list[tuple[int, float]]]:
        since = time.time() - self._click_window_s
        async with self._db.connect() as conn:
            rows = await conn.execute(
                select(
                    tracking_hits.c.portal_id,
                    tracking_hits.c.broadcast_id,
                    tracking_hits.c.link_id,
                    tracking_hits.c.at,
                ).where(
                    tracking_hits.c.broadcast_id.in_({k[1] for k in keys}),
                    tracking_hits.c.at >= since,
                    tracking_hits.c.kind.in_(LINK_KINDS),
                )
            )
            found: dict[tuple[int, int], list[tuple[int, float]]] = {}
            for row in rows:
                key = (row.portal_id, row.broadcast_id)
                found.setdefault(key, []).append((row.link_id, row.at))
        return {key: found.get(key, []) for key in keys}


def _broadcast_of(row: Any) -> BroadcastRecord:
    return BroadcastRecord(
        id=row.id,
        portal_id=row.portal_id,
        brand_id=row.brand_id,
        customer_id=row.customer_id,
        content_id=row.content_id,
        sent_at=row.sent_at,
        context=_json_object(row.context, "broadcasts.context", row.id),
    )


def _link_of(row: Any) -> LinkRecord:
    return LinkRecord(
        id=row.id,
        portal_id=row.portal_id,
        content_id=row.content_id,
        kind=row.kind,
        url=row.url,
        alt=row.alt,
        tags=_tags(row.tags, row.id),
        utm=_google_values(_json_object(row.utm, "links.utm", row.id)),
    )


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
