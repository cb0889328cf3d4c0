"""Helpers of the feedback intake tests: a brand installed against the sandbox, a
customer, broadcasts sent to it, and returned mail addressed to those broadcasts."""

from __future__ import annotations

import itertools
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from brand_support import install_brand_for
from pegabridge.feedback.corpus import CorpusMissingError, find_corpora
from pegabridge.feedback.matching import default_key_ring, verp_address
from pegabridge.mailing.render import broadcast_token
from pegabridge.sandbox import SandboxEndpoint
from pegabridge.store.tables import broadcasts, customers, feedback_messages
from pegabridge.web.runtime import Runtime

SAMPLES = Path(__file__).resolve().parent / "samples" / "feedback_intake"
RETURN_DOMAIN = "return.example"
PORTAL_ID = 31
BRAND_ID = 2
_nonce = itertools.count(1)


@dataclass(frozen=True)
class Sent:
    """One broadcast as mailing would have left it."""

    broadcast_id: int
    customer_id: int
    email_address: str
    message_id: str
    token: str

    @property
    def return_path(self) -> str:
        return verp_address(self.token, RETURN_DOMAIN)


async def install_brand(runtime: Runtime, sandbox: SandboxEndpoint | None) -> None:
    """Portal, brand and (with a sandbox) an active installation sending everything."""
    await install_brand_for(
        runtime, (PORTAL_ID, "Feedback portal"), (BRAND_ID, "Feedback brand"), sandbox
    )


async def add_customer(
    runtime: Runtime, email: str, hard: int = 0, soft: int = 0, complaints: int = 0
) -> int:
    """A customer of the brand with the given counters; its id."""

    async def insert(conn: AsyncConnection) -> int:
        now = time.time()
        result = await conn.execute(
            customers.insert()
            .values(
                portal_id=PORTAL_ID,
                brand_id=BRAND_ID,
                external_id=f"ext-{email}",
                email=email,
                bounce_count_hard=hard,
                bounce_count_soft=soft,
                complaint_count=complaints,
                created_at=now,
                updated_at=now,
            )
            .returning(customers.c.id)
        )
        return int(result.scalar_one())

    return await runtime.committer.run(insert)


async def add_broadcast(
    runtime: Runtime, customer_id: int, email: str, message_id: str = ""
) -> Sent:
    """A sent broadcast to the customer, with its context and return-path token."""
    message_id = message_id or f"<pb.{uuid.uuid4().hex}@brand.example>"

    async def insert(conn: AsyncConnection) -> int:
        now = time.time()
        result = await conn.execute(
            broadcasts.insert()
            .values(
                portal_id=PORTAL_ID,
                brand_id=BRAND_ID,
                send_id=next(_nonce),
                customer_id=customer_id,
                content_id=5,
                email_address=email,
                state="sent",
                message_id=message_id,
                sent_at=now,
                context="{}",
                created_at=now,
            )
            .returning(broadcasts.c.id)
        )
        broadcast_id = int(result.scalar_one())
        await conn.execute(
            broadcasts.update()
            .where(broadcasts.c.id == broadcast_id)
            .values(context=json.dumps(context(broadcast_id, customer_id, email)))
        )
        return broadcast_id

    broadcast_id = await runtime.committer.run(insert)
    # The token exactly as mailing writes it into the return path and the header.
    ring = default_key_ring(runtime.settings, runtime.vault)
    token = broadcast_token(ring, PORTAL_ID, broadcast_id)
    return Sent(broadcast_id, customer_id, email, message_id, token)


def context(broadcast_id: int, customer_id: int, email: str) -> dict[str, Any]:
    """The basic fields mailing stores on a broadcast."""
    return {
        "portal_id": PORTAL_ID,
        "portal_name": "Feedback portal",
        "brand_id": BRAND_ID,
        "brand_name": "Feedback brand",
        "customer_id": customer_id,
        "external_id": f"ext-{email}",
        "customer_email_address": email,
        "email_address": email,
        "email_domain": email.rpartition("@")[2],
        "email_address_override": False,
        "broadcast_id": broadcast_id,
        "broadcast_timestamp": 1_790_000_000,
        "broadcast_type": "MAIL",
        "broadcast_event_type": "SINGLEMAIL",
        "sub_type": "SINGLEMAIL",
        "content_id": 5,
        "content_name": "Spring offers",
        "subject": "Spring offers",
        "mailing_type": "Newsletter",
        "broadcast_manual_options": {"InteractionId": "-563481321460449721"},
    }


def sample(name: str, sent: Sent, header: str | None = None) -> bytes:
    """A hand-written sample of tests/samples/feedback_intake, addressed to ``sent``.

    ``header`` is the ``X-Pegabridge-Broadcast`` value; by default the token.
    """
    text = (SAMPLES / name).read_text()
    for key, value in {
        "%%RETURN_PATH%%": sent.return_path,
        "%%RECIPIENT%%": sent.email_address,
        "%%MESSAGE_ID%%": sent.message_id,
        "%%BROADCAST_HEADER%%": sent.token if header is None else header,
        "%%NONCE%%": str(next(_nonce)),
    }.items():
        text = text.replace(key, value)
    return text.encode()


async def customer_counts(runtime: Runtime, customer_id: int) -> dict[str, Any]:
    """The customer's counters and unsubscription time."""
    async with runtime.db.connect() as conn:
        row = (
            await conn.execute(
                select(
                    customers.c.bounce_count_hard,
                    customers.c.bounce_count_soft,
                    customers.c.complaint_count,
                    customers.c.unsubscribed_at,
                ).where(customers.c.id == customer_id)
            )
        ).one()
    return dict(row._mapping)


async def feedback_rows(runtime: Runtime) -> list[dict[str, Any]]:
    """Every feedback_messages row, oldest first."""
    async with runtime.db.connect() as conn:
        rows = await conn.execute(
            select(feedback_messages).order_by(feedback_messages.c.id)
        )
        return [dict(r._mapping) for r in rows]


def corpus_message(folder: str, name: str) -> tuple[bytes, dict[str, Any]]:
    """A real message of the shared corpora and Sisimai's first expected row for it.

    Skips the test when the corpora are absent.
    """
    try:
        root = find_corpora() / folder
    except CorpusMissingError as exc:
        pytest.skip(f"bounce/complaint corpora absent: {exc}")
    for line in (root / "expected.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["file"] == name and row["recipient_index"] == 1:
            return (root / name).read_bytes(), row
    raise LookupError(f"{name} has no expected row in {root}")
