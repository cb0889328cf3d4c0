"""Invoicing statements: the events sent per metric in one invoicing period.

An event counts as sent when its endpoint answered 2xx, and it counts in the period
of that answer (``delivered_at``). Periods follow the installation's interval and are
calendar months, quarters or years in UTC, labelled ``2026-05``, ``2026-Q2`` or
``2026``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.events.metrics import Metric
from pegabridge.installs.service import INVOICE_INTERVALS, Installation
from pegabridge.store.tables import outbox

_LABELS = {
    "monthly": re.compile(r"^(\d{4})-(\d{2})$"),
    "quarterly": re.compile(r"^(\d{4})-Q([1-4])$"),
    "yearly": re.compile(r"^(\d{4})$"),
}


@dataclass(frozen=True)
class Period:
    """One invoicing period: from ``start`` (included) to ``end`` (excluded), UTC."""

    interval: str
    start: dt.datetime
    end: dt.datetime
    label: str

    def previous(self) -> Period:
        return period_containing(self.interval, self.start - dt.timedelta(days=1))

    def next(self) -> Period:
        return period_containing(self.interval, self.end)


@dataclass(frozen=True)
class Statement:
    """Events sent per metric in a period, for one installation."""

    installation_id: int
    portal_id: int
    brand_id: int
    po_number: str
    period: Period
    counts: dict[Metric, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def period_containing(interval: str, moment: dt.datetime) -> Period:
    """The period of ``interval`` that contains ``moment`` (a UTC time)."""
    if interval not in INVOICE_INTERVALS:
        raise ValueError(f"the interval is one of {', '.join(INVOICE_INTERVALS)}")
    year = moment.year
    if interval == "monthly":
        start = dt.datetime(year, moment.month, 1, tzinfo=dt.UTC)
        end = _add_months(start, 1)
        label = f"{year}-{moment.month:02d}"
    elif interval == "quarterly":
        quarter = (moment.month - 1) // 3 + 1
        start = dt.datetime(year, 3 * quarter - 2, 1, tzinfo=dt.UTC)
        end = _add_months(start, 3)
        label = f"{year}-Q{quarter}"
    else:
        start = dt.datetime(year, 1, 1, tzinfo=dt.UTC)
        end = dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC)
        label = str(year)
    return Period(interval, start, end, label)


def parse_period(interval: str, label: str) -> Period:
    """The period named ``label``; refuses a label that does not fit the interval."""
    pattern = _LABELS.get(interval)
    match = pattern.match(label.strip()) if pattern else None
    if match is None:
        examples = {"monthly": "2026-05", "quarterly": "2026-Q2", "yearly": "2026"}
        raise ValueError(
            f"a {interval} period is written like {examples.get(interval, '2026')}"
        )
    year = int(match.group(1))
    if not 1970 <= year <= 9998:
        raise ValueError("the year is out of range")
    if interval == "monthly":
        month = int(match.group(2))
        if not 1 <= month <= 12:
            raise ValueError("the month is between 01 and 12")
    elif interval == "quarterly":
        month = 3 * int(match.group(2)) - 2
    else:
        month = 1
    return period_containing(interval, dt.datetime(year, month, 1, tzinfo=dt.UTC))


def _add_months(start: dt.datetime, months: int) -> dt.datetime:
    index = start.month - 1 + months
    return start.replace(year=start.year + index // 12, month=index % 12 + 1)


async def statement(
    conn: AsyncConnection, installation: Installation, period: Period
) -> Statement:
    """Count the events of ``installation`` delivered within ``period``."""
    rows = await conn.execute(
        select(outbox.c.metric, func.count().label("n"))
        .where(
            outbox.c.installation_id == installation.id,
            outbox.c.state == "delivered",
            outbox.c.delivered_at >= period.start.timestamp(),
            outbox.c.delivered_at < period.end.timestamp(),
        )
        .group_by(outbox.c.metric)
    )
    found = {row.metric: int(row.n) for row in rows}
    counts = {metric: found.get(metric.value, 0) for metric in Metric}
    return Statement(
        installation.id,
        installation.portal_id,
        installation.brand_id,
        installation.po_number,
        period,
        counts,
    )


def statement_csv(document: Statement) -> str:
    """The statement as CSV: one line per metric, then the total."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [
            "portal_id",
            "brand_id",
            "installation_id",
            "po_number",
            "period",
            "period_start_utc",
            "period_end_utc",
            "metric",
            "events_sent",
        ]
    )
    common = [
        document.portal_id,
        document.brand_id,
        document.installation_id,
        _csv_safe(document.po_number),
        document.period.label,
        document.period.start.isoformat(),
        document.period.end.isoformat(),
    ]
    for metric, count in document.counts.items():
        writer.writerow([*common, metric.value, count])
    writer.writerow([*common, "total", document.total])
    return out.getvalue()


def _csv_safe(text: str) -> str:
    # A cell starting with = + - @ is run as a formula by spreadsheet programs.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text
