"""What the pages and the HTTP API do to an installation, written once for both.

Each function takes the process's :class:`Runtime`, writes through its group
committer, and wakes the delivery workers when events became due.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import uuid
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from pegabridge.delivery import outbox
from pegabridge.events.metrics import Activity, Metric
from pegabridge.events.models import EVENT_MODELS
from pegabridge.installs import service
from pegabridge.installs.connection_test import ConnectionReport, check_connection
from pegabridge.installs.endpoint_guard import EndpointGuard
from pegabridge.installs.service import (
    Installation,
    InstallError,
    InstallSettings,
    OAuthClient,
)
from pegabridge.store.tables import delivery_attempts
from pegabridge.store.tables import outbox as outbox_table
from pegabridge.web.runtime import Runtime

FAILURES_SHOWN = 10
ANSWER_CHARS = 200
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
RESERVED_HEADERS = frozenset(
    {"authorization", "content-type", "content-length", "host", "transfer-encoding"}
)
_CREDENTIAL = re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]+")


@dataclass(frozen=True)
class Failure:
    """One failed attempt as the installation page shows it."""

    at: float
    status_code: int | None
    outcome: str
    error: str
    answer: str


@dataclass(frozen=True)
class Overview:
    """The numbers of the installation page."""

    sent_today: dict[Metric, int]
    waiting: int
    dead: int
    failures: list[Failure]

    @property
    def sent_today_total(self) -> int:
        return sum(self.sent_today.values())


# --- Reading. ---


def start_of_today_utc(now: float | None = None) -> float:
    """Midnight UTC of the current day, in Unix seconds."""
    moment = dt.datetime.fromtimestamp(now or time.time(), dt.UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


async def overview(conn: AsyncConnection, installation_id: int) -> Overview:
    """Sent today per metric, events waiting, dead letters and the last failures."""
    rows = await conn.execute(
        select(outbox_table.c.metric, func.count().label("n"))
        .where(
            outbox_table.c.installation_id == installation_id,
            outbox_table.c.state == "delivered",
            outbox_table.c.delivered_at >= start_of_today_utc(),
        )
        .group_by(outbox_table.c.metric)
    )
    found = {r.metric: int(r.n) for r in rows}
    states = await conn.execute(
        select(outbox_table.c.state, func.count().label("n"))
        .where(outbox_table.c.installation_id == installation_id)
        .group_by(outbox_table.c.state)
    )
    by_state = {r.state: int(r.n) for r in states}
    return Overview(
        sent_today={m: found.get(m.value, 0) for m in Metric},
        waiting=by_state.get("pending", 0),
        dead=by_state.get("dead", 0),
        failures=await last_failures(conn, installation_id),
    )


async def last_failures(conn: AsyncConnection, installation_id: int) -> list[Failure]:
    """The newest failed attempts, with the endpoint's answer shortened and cleaned."""
    rows = await conn.execute(
        select(delivery_attempts)
        .where(
            delivery_attempts.c.installation_id == installation_id,
            delivery_attempts.c.outcome.in_(["retry", "paused", "dead"]),
        )
        .order_by(delivery_attempts.c.at.desc())
        .limit(FAILURES_SHOWN)
    )
    return [
        Failure(
            r.at,
            r.status_code,
            r.outcome,
            clean_answer(r.error),
            clean_answer(r.response_excerpt),
        )
        for r in rows
    ]


def clean_answer(text: str) -> str:
    """An endpoint's answer fit to show: credentials masked, at most 200 characters."""
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1)} ***", text)
    text = " ".join(text.split())
    return text if len(text) <= ANSWER_CHARS else text[: ANSWER_CHARS - 1] + "…"


async def count_waiting(conn: AsyncConnection, installation_id: int) -> int:
    """Events of the installation not yet delivered."""
    return int(
        await conn.scalar(
            select(func.count()).where(
                outbox_table.c.installation_id == installation_id,
                outbox_table.c.state == "pending",
            )
        )
        or 0
    )


# --- Checking input. ---


def parse_extra_headers(text: str) -> dict[str, str]:
    """Lines of ``Name: value`` as a dict; refuses what could spoof a request."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        name, value = name.strip(), value.strip()
        if not colon or not HEADER_NAME.match(name):
            raise InstallError(
                f"line {number}: write each header as Name: value", "extra_headers"
            )
        if name.lower() in RESERVED_HEADERS:
            raise InstallError(
                f"line {number}: pegabridge sets {name} itself", "extra_headers"
            )
        if len(value) > 2000 or any(ord(c) < 32 and c != "\t" for c in value):
            raise InstallError(
                f"line {number}: the value is too long or holds control characters",
                "extra_headers",
            )
        headers[name] = value
    if len(headers) > 20:
        raise InstallError("at most 20 extra headers", "extra_headers")
    return headers


def format_extra_headers(headers: dict[str, str]) -> str:
    """The textarea form of extra headers."""
    return "\n".join(f"{name}: {value}" for name, value in headers.items())


async def check_endpoint(
    runtime: Runtime, url: str, field: str = "endpoint_url"
) -> str:
    """The cleaned URL, refused when it is malformed or points where it may not."""
    guard = EndpointGuard.from_settings(runtime.settings)
    return await service.check_endpoint(guard, url, field)


# --- Changing. ---


async def save(
    runtime: Runtime,
    portal_id: int,
    brand_id: int,
    values: InstallSettings,
    activate: bool = False,
) -> Installation:
    """Save wizard values (checking new endpoints first) and wake the workers."""
    if values.endpoint_url is not None:
        url = await check_endpoint(runtime, values.endpoint_url)
        values = dataclasses.replace(values, endpoint_url=url)
    if values.token_url:
        url = await check_endpoint(runtime, values.token_url, "token_url")
        values = dataclasses.replace(values, token_url=url)

    installation = await runtime.committer.run(
        lambda conn: service.save_installation(
            conn, runtime.vault, portal_id, brand_id, values, activate=activate
        )
    )
    _wake(runtime)
    return installation


async def test_connection(
    runtime: Runtime,
    installation: Installation | None,
    url: str,
    username: str,
    password: str,
    extra_headers: dict[str, str] | None = None,
    oauth: OAuthClient | None = None,
) -> ConnectionReport:
    """Test the given values; an empty password or client secret means the saved one.

    With ``oauth`` the test fetches a token from its token endpoint first and sends
    the test request with it instead of the username and password.
    """
    url = service.check_endpoint_url(url)
    if oauth is not None:
        oauth = await _with_saved_secret(runtime, installation, oauth)
    elif not password and installation is not None and installation.password_set:
        async with runtime.db.connect() as conn:
            _, password = await service.credentials(
                conn, runtime.vault, installation.id
            )
    return await check_connection(
        url,
        username,
        password,
        EndpointGuard.from_settings(runtime.settings),
        extra_headers,
        timeout_s=runtime.settings.request_timeout_s,
        oauth=oauth,
    )


async def _with_saved_secret(
    runtime: Runtime, installation: Installation | None, oauth: OAuthClient
) -> OAuthClient:
    service.check_endpoint_url(oauth.token_url, "token_url")
    if oauth.client_secret or installation is None:
        return oauth
    async with runtime.db.connect() as conn:
        secret = await service.client_secret(conn, runtime.vault, installation.id)
    return dataclasses.replace(oauth, client_secret=secret)


async def pause(runtime: Runtime, installation: Installation, reason: str) -> bool:
    """Stop sending; the events wait."""
    return await runtime.committer.run(
        lambda conn: service.pause(conn, installation.id, reason)
    )


async def resume(runtime: Runtime, installation: Installation) -> bool:
    """Send again; what waited is due at once."""
    now = time.time()

    async def act(conn: AsyncConnection) -> bool:
        changed = await service.resume(conn, installation.id)
        if changed:
            await outbox.make_due_now(conn, installation.id, now)
        return changed

    changed = await runtime.committer.run(act)
    _wake(runtime)
    return changed


async def replay_dead_letters(runtime: Runtime, installation: Installation) -> int:
    """Make the installation's dead letters due again, unchanged; how many."""
    now = time.time()
    count = await runtime.committer.run(
        lambda conn: outbox.replay_dead(conn, now, installation_id=installation.id)
    )
    _wake(runtime)
    return count


async def uninstall(runtime: Runtime, installation: Installation) -> None:
    """Remove the app; waiting events become dead letters and are not sent."""
    await runtime.committer.run(lambda conn: service.uninstall(conn, installation.id))
    _wake(runtime)


async def send_test_event(
    runtime: Runtime, installation: Installation, portal_name: str, brand_name: str
) -> tuple[str, str]:
    """Record one real event, marked as a test, through the recorder.

    Its metric is the first activity the installation sends. Returns its uuid and
    what the recorder did with it (``pending`` when it goes out).
    """
    activity = next(
        (a for a in Activity if a in installation.activities), Activity.BROADCASTS
    )
    model = EVENT_MODELS[activity.value]
    now = int(time.time())
    event = model(
        uuid=str(uuid.uuid4()),
        metric=activity.value,
        metric_timestamp=now,
        portal_id=installation.portal_id,
        portal_name=portal_name,
        brand_id=installation.brand_id,
        brand_name=brand_name,
        broadcast_timestamp=now,
        email_address="test@example.invalid",
        email_domain="example.invalid",
        subject="pegabridge test event",
        test_mailing=True,
    )
    result = await runtime.recorder.record([event])
    return event.uuid, result.states[0]


def _wake(runtime: Runtime) -> None:
    if runtime.delivery is not None:
        runtime.delivery.wake()
