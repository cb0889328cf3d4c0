"""Finding the broadcast (and so the customer) a returned mail is about.

Three witnesses, tried in this order:

1. the VERP return path ``bounce+<token>@<return domain>`` the mail was sent back to:
   the envelope recipients of the SMTP delivery, then the report's own ``To``,
   ``Delivered-To``, ``X-Original-To`` and ``Envelope-To``;
2. the ``X-Pegabridge-Broadcast`` header of the returned original message;
3. the returned original's ``Message-ID``, as recorded on ``broadcasts.message_id``.

A token is a signed :mod:`pegabridge.tracking.tokens` token, so it cannot be forged; it
is trusted alone. A plain broadcast number in the header (older mail, hand-made
reports) is trusted only when the broadcast was sent to one of the report's
recipients. A Message-ID is unique to one email and trusted alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.config import Settings
from pegabridge.feedback.models import FeedbackReport
from pegabridge.installs.vault import Vault
from pegabridge.store.tables import broadcasts
from pegabridge.tracking.tokens import InvalidToken, KeyRing
from pegabridge.tracking.urls import key_ring_for

logger = logging.getLogger(__name__)

VERP_PREFIX = "bounce+"
BROADCAST_HEADER = "x-pegabridge-broadcast"
TOKEN_KEY_PURPOSE = b"tracking"


class MatchedBy(StrEnum):
    """Which witness identified the broadcast; stored in the message's summary."""

    RETURN_PATH = "return-path"
    HEADER = "header"
    MESSAGE_ID = "message-id"
    SMTP = "smtp"


@dataclass(frozen=True, slots=True)
class BroadcastMatch:
    """The broadcast a returned mail is about, with what its events need."""

    broadcast_id: int
    portal_id: int
    brand_id: int
    customer_id: int
    email_address: str
    matched_by: MatchedBy
    context: dict[str, Any] = field(default_factory=dict)


def default_key_ring(settings: Settings, vault: Vault) -> KeyRing:
    """The ring that signs tracking and return-path tokens in every process."""
    return key_ring_for(settings.tracking_keys, vault.derive(TOKEN_KEY_PURPOSE))


def verp_tokens(addresses: Iterable[str]) -> list[str]:
    """The tokens of the ``bounce+<token>@...`` addresses among ``addresses``."""
    tokens = []
    for address in addresses:
        local, at, _domain = address.strip().strip("<>").rpartition("@")
        if at and local[: len(VERP_PREFIX)].lower() == VERP_PREFIX:
            token = local[len(VERP_PREFIX) :]
            if token and token not in tokens:
                tokens.append(token)
    return tokens


def verp_address(token: str, domain: str) -> str:
    """The return path for a token: ``bounce+<token>@<domain>``."""
    return f"{VERP_PREFIX}{token}@{domain}"


async def match_report(
    conn: AsyncConnection,
    report: FeedbackReport,
    keys: KeyRing | None,
    envelope_recipients: Sequence[str] = (),
) -> BroadcastMatch | None:
    """The broadcast ``report`` is about, or None when no witness names one."""
    addresses = [*envelope_recipients, *report.return_path_addresses]
    for token in verp_tokens(addresses):
        found = await _by_token(conn, token, keys, MatchedBy.RETURN_PATH)
        if found is not None:
            return found

    for name, value in report.original.pegabridge:
        if name == BROADCAST_HEADER:
            found = await _by_header(conn, value.strip(), keys, report)
            if found is not None:
                return found

    if report.original.message_id:
        return await _by_message_id(conn, report.original.message_id)
    return None


async def load_broadcast(
    conn: AsyncConnection,
    broadcast_id: int,
    matched_by: MatchedBy,
    portal_id: int | None = None,
) -> BroadcastMatch | None:
    """The broadcast with this id (and portal, when given), or None."""
    query = select(*_COLUMNS).where(broadcasts.c.id == broadcast_id)
    if portal_id is not None:
        query = query.where(broadcasts.c.portal_id == portal_id)
    row = (await conn.execute(query)).first()
    return _match(row, matched_by) if row is not None else None


async def _by_token(
    conn: AsyncConnection, token: str, keys: KeyRing | None, matched_by: MatchedBy
) -> BroadcastMatch | None:
    if keys is None:
        return None
    try:
        payload = keys.verify(token)
    except InvalidToken:
        logger.info(
            "return-path token refused",
            extra={"event": "feedback.token_refused", "matched_by": matched_by.value},
        )
        return None
    return await load_broadcast(
        conn, payload.broadcast_id, matched_by, payload.portal_id
    )


async def _by_header(
    conn: AsyncConnection, value: str, keys: KeyRing | None, report: FeedbackReport
) -> BroadcastMatch | None:
    if not value.isdigit():
        return await _by_token(conn, value, keys, MatchedBy.HEADER)

    found = await load_broadcast(conn, int(value), MatchedBy.HEADER)
    if found is None:
        return None
    reported = {r.address.lower() for r in report.recipients}
    return found if found.email_address.lower() in reported else None


async def _by_message_id(
    conn: AsyncConnection, message_id: str
) -> BroadcastMatch | None:
    bare = message_id.strip().strip("<>").strip()
    if not bare:
        return None
    rows = (
        await conn.execute(
            select(*_COLUMNS)
            .where(broadcasts.c.message_id.in_([bare, f"<{bare}>"]), _HAS_MESSAGE_ID)
            .order_by(broadcasts.c.id)
            .limit(2)
        )
    ).all()
    if len(rows) != 1:
        return None
    return _match(rows[0], MatchedBy.MESSAGE_ID)


# Repeats the condition of the partial index, so that the planner may use it.
_HAS_MESSAGE_ID = text("broadcasts.message_id != ''")

_COLUMNS = (
    broadcasts.c.id,
    broadcasts.c.portal_id,
    broadcasts.c.brand_id,
    broadcasts.c.customer_id,
    broadcasts.c.email_address,
    broadcasts.c.context,
)


def _match(
    row: Row[Any, Any, Any, Any, Any, Any], matched_by: MatchedBy
) -> BroadcastMatch:
    try:
        context = json.loads(row.context or "{}")
    except ValueError:
        context = {}
    return BroadcastMatch(
        broadcast_id=int(row.id),
        portal_id=int(row.portal_id),
        brand_id=int(row.brand_id),
        customer_id=int(row.customer_id),
        email_address=str(row.email_address),
        matched_by=matched_by,
        context=context if isinstance(context, dict) else {},
    )
