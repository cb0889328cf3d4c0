"""Customers of a brand: addresses, names, free fields, consent and mailability.

A customer is mailable unless unsubscribed, hard-bounced (count above 0) or
soft-bounced more than four times (spec: bounce fields). Changing the address resets
the soft bounce count. Erasing a customer removes the row and blanks the address in
the broadcasts sent to them.
"""

from __future__ import annotations

import csv
import json
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import and_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pegabridge.mailing.errors import Conflict, MailingError, NotFound
from pegabridge.store.tables import (
    broadcasts,
    customers,
    delivery_attempts,
    feedback_messages,
    outbox,
    tracking_hits,
)

MAX_SOFT_BOUNCES = 4
CORE_COLUMNS = ("email", "external_id", "first_name", "last_name", "tracking_consent")
CUSTOMER_KEYS = ("external_id", "email", "customer_id")

_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_TRUE = frozenset({"1", "true", "yes", "y", "on"})
_FALSE = frozenset({"0", "false", "no", "n", "off", ""})


@dataclass(frozen=True)
class Customer:
    """One customer as stored."""

    id: int
    portal_id: int
    brand_id: int
    external_id: str
    email: str
    first_name: str
    last_name: str
    fields: dict[str, Any]
    tracking_consent: bool
    unsubscribed_at: float | None
    bounce_count_hard: int
    bounce_count_soft: int
    complaint_count: int

    def for_template(self) -> dict[str, Any]:
        """What templates see as ``customer``."""
        return {
            "id": self.id,
            "external_id": self.external_id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "fields": self.fields,
        }

    def as_json(self) -> dict[str, Any]:
        """The customer as the API shows it."""
        return {
            "id": self.id,
            "brand_id": self.brand_id,
            "external_id": self.external_id,
            "email": self.email,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "fields": self.fields,
            "tracking_consent": self.tracking_consent,
            "unsubscribed": self.unsubscribed_at is not None,
            "bounce_count_hard": self.bounce_count_hard,
            "bounce_count_soft": self.bounce_count_soft,
            "complaint_count": self.complaint_count,
            "mailable": not_mailable_reason(self) is None,
        }


@dataclass
class CustomerInput:
    """Values to create a customer or change one; ``None`` leaves a value as it is."""

    email: str | None = None
    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    fields: dict[str, Any] | None = None
    tracking_consent: bool | None = None


def normalise_email(address: str) -> str:
    """The address in lower case; refuses what cannot be a deliverable address.

    The check is syntactic (RFC 5321 4.5.3.1 lengths, dot-atom local part, a domain of
    at least two LDH labels); it does not ask DNS.
    """
    value = address.strip().lower()
    local, at, domain = value.rpartition("@")
    problem = ""
    if not at or not local or not domain:
        problem = "it has no local part and domain around one '@'"
    elif len(value) > 254 or len(local) > 64:
        problem = "it is too long"
    elif (
        not _LOCAL.match(local) or ".." in local or local[0] == "." or local[-1] == "."
    ):
        problem = "its local part has characters that are not allowed"
    elif "." not in domain or not all(_LABEL.match(p) for p in domain.split(".")):
        problem = "its domain is not a valid host name"
    if problem:
        raise MailingError(f"{address!r} is not an email address: {problem}", "email")
    return value


def not_mailable_reason(customer: Customer) -> str | None:
    """Why the customer may not be mailed (``unsubscribed``, ``hard-bounced``,
    ``soft-bounced``), or ``None`` when they may."""
    if customer.unsubscribed_at is not None:
        return "unsubscribed"
    if customer.bounce_count_hard > 0:
        return "hard-bounced"
    if customer.bounce_count_soft > MAX_SOFT_BOUNCES:
        return "soft-bounced"
    return None


def customer_of_row(row: Any) -> Customer:
    """A :class:`Customer` from a row of ``customers``."""
    m = row._mapping
    return Customer(
        id=int(m["id"]),
        portal_id=int(m["portal_id"]),
        brand_id=int(m["brand_id"]),
        external_id=m["external_id"],
        email=m["email"],
        first_name=m["first_name"],
        last_name=m["last_name"],
        fields=json.loads(m["fields"] or "{}"),
        tracking_consent=bool(m["tracking_consent"]),
        unsubscribed_at=m["unsubscribed_at"],
        bounce_count_hard=int(m["bounce_count_hard"]),
        bounce_count_soft=int(m["bounce_count_soft"]),
        complaint_count=int(m["complaint_count"]),
    )


def _brand(portal_id: int, brand_id: int) -> Any:
    return and_(customers.c.portal_id == portal_id, customers.c.brand_id == brand_id)


async def get_customer(
    conn: AsyncConnection, portal_id: int, brand_id: int, customer_id: int
) -> Customer:
    """The customer with ``customer_id`` in the brand; :class:`NotFound` otherwise."""
    row = (
        await conn.execute(
            select(customers).where(
                _brand(portal_id, brand_id), customers.c.id == customer_id
            )
        )
    ).first()
    if row is None:
        raise NotFound(f"brand {brand_id} has no customer {customer_id}", "customer_id")
    return customer_of_row(row)


async def find_customer(
    conn: AsyncConnection, portal_id: int, brand_id: int, key: str, value: str
) -> Customer | None:
    """The customer whose ``key`` (external_id, email, customer_id) is ``value``."""
    if key == "customer_id":
        if not value.strip().isdigit():
            return None
        condition = customers.c.id == int(value)
    elif key == "email":
        condition = customers.c.email == value.strip().lower()
    elif key == "external_id":
        condition = customers.c.external_id == value
    else:
        raise MailingError(f"customers are found by one of {CUSTOMER_KEYS}", "key")
    row = (
        await conn.execute(
            select(customers)
            .where(_brand(portal_id, brand_id), condition)
            .order_by(customers.c.id)
            .limit(1)
        )
    ).first()
    return customer_of_row(row) if row is not None else None


async def create_customer(
    conn: AsyncConnection, portal_id: int, brand_id: int, values: CustomerInput
) -> Customer:
    """Create a customer; the address must be new in the brand."""
    if values.email is None:
        raise MailingError("a customer needs an email address", "email")
    email = normalise_email(values.email)
    await _require_free(conn, portal_id, brand_id, email)

    now = time.time()
    result = await conn.execute(
        customers.insert()
        .values(
            portal_id=portal_id,
            brand_id=brand_id,
            email=email,
            external_id=(values.external_id or "").strip(),
            first_name=(values.first_name or "").strip(),
            last_name=(values.last_name or "").strip(),
            fields=json.dumps(values.fields or {}, ensure_ascii=False),
            tracking_consent=(
                True if values.tracking_consent is None else values.tracking_consent
            ),
            created_at=now,
            updated_at=now,
        )
        .returning(customers.c.id)
    )
    return await get_customer(conn, portal_id, brand_id, int(result.scalar_one()))


async def update_customer(
    conn: AsyncConnection,
    portal_id: int,
    brand_id: int,
    customer_id: int,
    values: CustomerInput,
) -> Customer:
    """Change a customer; a new address resets the soft bounce count (spec)."""
    current = await get_customer(conn, portal_id, brand_id, customer_id)
    changes: dict[str, Any] = {}
    if values.email is not None:
        email = normalise_email(values.email)
        if email != current.email:
            await _require_free(conn, portal_id, brand_id, email)
            changes.update(email=email, bounce_count_soft=0)
    for name in ("external_id", "first_name", "last_name"):
        value = getattr(values, name)
        if value is not None:
            changes[name] = value.strip()
    if values.fields is not None:
        changes["fields"] = json.dumps(values.fields, ensure_ascii=False)
    if values.tracking_consent is not None:
        changes["tracking_consent"] = values.tracking_consent

    if changes:
        await conn.execute(
            update(customers)
            .where(customers.c.id == customer_id)
            .values(**changes, updated_at=time.time())
        )
    return await get_customer(conn, portal_id, brand_id, customer_id)


async def erase_customer(
    conn: AsyncConnection, portal_id: int, brand_id: int, customer_id: int
) -> None:
    """Erase a customer with their personal data.

    The customer row goes, their address is blanked in the broadcasts sent to them,
    the tracking hits of those broadcasts (addresses, user agents) and the feedback
    mail about them are deleted, and so are their events that are already delivered,
    dead or skipped. Events still waiting are kept: they were acknowledged and are
    sent, then purged with the rest of the delivered events.
    """
    await get_customer(conn, portal_id, brand_id, customer_id)
    theirs = select(broadcasts.c.id).where(
        broadcasts.c.customer_id == customer_id, broadcasts.c.portal_id == portal_id
    )
    await conn.execute(
        tracking_hits.delete().where(tracking_hits.c.broadcast_id.in_(theirs))
    )
    await conn.execute(
        feedback_messages.delete().where(feedback_messages.c.broadcast_id.in_(theirs))
    )
    done_events = select(outbox.c.id).where(
        outbox.c.portal_id == portal_id,
        outbox.c.brand_id == brand_id,
        outbox.c.customer_id == customer_id,
        outbox.c.state != "pending",
    )
    await conn.execute(
        delivery_attempts.delete().where(delivery_attempts.c.outbox_id.in_(done_events))
    )
    await conn.execute(outbox.delete().where(outbox.c.id.in_(done_events)))
    await conn.execute(
        update(broadcasts)
        .where(
            broadcasts.c.customer_id == customer_id,
            broadcasts.c.portal_id == portal_id,
        )
        .values(email_address="", context="{}")
    )
    await conn.execute(customers.delete().where(customers.c.id == customer_id))


async def _require_free(
    conn: AsyncConnection, portal_id: int, brand_id: int, email: str
) -> None:
    taken = await conn.scalar(
        select(customers.c.id).where(
            _brand(portal_id, brand_id), customers.c.email == email
        )
    )
    if taken is not None:
        raise Conflict(f"{email} is already customer {taken} of this brand", "email")


async def customer_pages(
    db: AsyncEngine,
    portal_id: int,
    brand_id: int,
    page_size: int,
    customer_ids: list[int] | None = None,
) -> AsyncIterator[list[Customer]]:
    """The brand's customers (or those of ``customer_ids``) by id, a page at a time.

    Each page is read in its own short transaction, so memory and locks stay flat in
    the number of customers.
    """
    after = 0
    while True:
        query = select(customers).where(
            _brand(portal_id, brand_id), customers.c.id > after
        )
        if customer_ids is not None:
            chunk = sorted(i for i in customer_ids if i > after)[:page_size]
            if not chunk:
                return
            query = query.where(customers.c.id.in_(chunk))
        async with db.connect() as conn:
            rows = await conn.execute(query.order_by(customers.c.id).limit(page_size))
            page = [customer_of_row(r) for r in rows]
        if not page:
            if customer_ids is None:
                return
            after = chunk[-1]
            continue
        yield page
        after = page[-1].id


# --- CSV import. ---


@dataclass(frozen=True)
class RejectedRow:
    """A CSV row that was not imported, with its line number and the reason."""

    line: int
    email: str
    reason: str


@dataclass
class ImportReport:
    """What a CSV import did."""

    created: int = 0
    updated: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The report as the API and the CLI show it."""
        return {
            "created": self.created,
            "updated": self.updated,
            "rejected": [
                {"line": r.line, "email": r.email, "reason": r.reason}
                for r in self.rejected
            ],
        }


@dataclass(frozen=True)
class CsvRow:
    """A CSV row that parsed into a customer's values."""

    line: int
    values: CustomerInput


def count_utf8_lines(lines: Iterable[bytes]) -> int:
    """The number of lines of a CSV file; a line that is not UTF-8 is refused.

    Spreadsheets often save CSV in a legacy code page. Decoding such a file as UTF-8
    with replacement characters would store broken names without a word, so the file
    is refused with the first line to fix.
    """
    count = 0
    for count, line in enumerate(lines, start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            raise MailingError(
                f"line {count} of the CSV is not UTF-8; save the file as UTF-8 "
                '("CSV UTF-8" in spreadsheets) and import it again',
                "csv",
            ) from None
    return count


def read_csv(handle: TextIO) -> Iterator[CsvRow | RejectedRow]:
    """The rows of a customer CSV, parsed; a broken row becomes a :class:`RejectedRow`.

    The header names the columns; ``email`` is required, ``external_id``,
    ``first_name``, ``last_name`` and ``tracking_consent`` are known, any other column
    becomes a free field. Addresses seen earlier in the file are rejected as
    duplicates.
    """
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise MailingError("the CSV file is empty", "file")
    names = [
        h.strip().lower() if h.strip().lower() in CORE_COLUMNS else h.strip()
        for h in header
    ]
    if "email" not in names:
        raise MailingError(
            f"the CSV header needs an 'email' column; it has {header}", "file"
        )

    seen: set[str] = set()
    for cells in reader:
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        yield _parse_row(line, names, cells, seen)


def _parse_row(
    line: int, names: list[str], cells: list[str], seen: set[str]
) -> CsvRow | RejectedRow:
    raw_email = cells[names.index("email")] if len(cells) > names.index("email") else ""
    if len(cells) != len(names):
        return RejectedRow(
            line, raw_email, f"{len(cells)} columns where the header has {len(names)}"
        )
    row = dict(zip(names, cells, strict=True))
    try:
        email = normalise_email(row["email"])
        consent = _consent(row.get("tracking_consent"))
    except MailingError as exc:
        return RejectedRow(line, raw_email, exc.message)
    if email in seen:
        return RejectedRow(line, raw_email, "duplicate of an earlier row")
    seen.add(email)

    free = {k: v for k, v in row.items() if k not in CORE_COLUMNS and k}
    return CsvRow(
        line,
        CustomerInput(
            email=email,
            external_id=row.get("external_id", ""),
            first_name=row.get("first_name", ""),
            last_name=row.get("last_name", ""),
            fields=free,
            tracking_consent=consent,
        ),
    )


def _consent(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False if lowered else None
    raise MailingError(f"tracking_consent must be yes or no, not {value!r}", "consent")


async def import_batch(
    conn: AsyncConnection,
    portal_id: int,
    brand_id: int,
    rows: Iterable[CsvRow],
    report: ImportReport,
) -> None:
    """Write one batch of parsed rows: new addresses are created, known ones updated."""
    batch = list(rows)
    emails = [r.values.email for r in batch]
    existing = {
        row.email: int(row.id)
        for row in await conn.execute(
            select(customers.c.id, customers.c.email).where(
                _brand(portal_id, brand_id), customers.c.email.in_(emails)
            )
        )
    }
    now = time.time()
    fresh = [
        {
            "portal_id": portal_id,
            "brand_id": brand_id,
            "email": r.values.email,
            "external_id": (r.values.external_id or "").strip(),
            "first_name": (r.values.first_name or "").strip(),
            "last_name": (r.values.last_name or "").strip(),
            "fields": json.dumps(r.values.fields or {}, ensure_ascii=False),
            "tracking_consent": r.values.tracking_consent is not False,
            "created_at": now,
            "updated_at": now,
        }
        for r in batch
        if r.values.email not in existing
    ]
    if fresh:
        await conn.execute(customers.insert(), fresh)
    report.created += len(fresh)

    for r in batch:
        customer_id = existing.get(r.values.email or "")
        if customer_id is not None:
            await update_customer(conn, portal_id, brand_id, customer_id, r.values)
            report.updated += 1
