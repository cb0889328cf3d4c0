"""The "test connection" button: one real request to an endpoint, told in plain words.

The request is a POST with Basic auth and the extra headers of the installation, like
a delivery, but its body is a small JSON object marked as a connection test rather than
an interaction, so that nothing is recorded in the outbox. What came back is sorted into
one of a few outcomes a marketer can act on.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import aiohttp

from pegabridge.delivery.client import USER_AGENT, basic_auth_header, describe_failure
from pegabridge.installs.endpoint_guard import EndpointGuard, EndpointRefused

TEST_BODY = json.dumps({"pegabridge": "connection test", "metric": "test"})
EXCERPT_CHARS = 200


class Outcome(StrEnum):
    """What a connection test found; the value is stable for the API."""

    ACCEPTED = "accepted"
    WRONG_CREDENTIALS = "wrong_credentials"
    NOT_FOUND = "not_found"
    TIMED_OUT = "timed_out"
    CERTIFICATE = "certificate_not_trusted"
    NO_SUCH_NAME = "name_does_not_resolve"
    REFUSED = "connection_refused"
    BLOCKED = "address_not_allowed"
    OTHER_ANSWER = "other_answer"
    OTHER_ERROR = "other_error"


@dataclass(frozen=True)
class ConnectionReport:
    """The outcome, a sentence for the user, and what the endpoint said (truncated)."""

    outcome: Outcome
    message: str
    status_code: int | None = None
    duration_ms: float = 0.0
    response_excerpt: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.ACCEPTED


async def check_connection(
    url: str,
    username: str,
    password: str,
    guard: EndpointGuard,
    extra_headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> ConnectionReport:
    """Send one test request to ``url`` and say what came back; never raises."""
    started = time.perf_counter()
    try:
        await guard.check_url(url)
    except EndpointRefused as exc:
        return ConnectionReport(Outcome.BLOCKED, str(exc))
    except OSError as exc:
        return _report_error(exc, url, 0.0)

    try:
        status, excerpt = await _post(url, username, password, extra_headers, timeout_s)
    except Exception as exc:
        return _report_error(exc, url, _ms_since(started))
    return _report_answer(status, excerpt, _ms_since(started))


async def _post(
    url: str,
    username: str,
    password: str,
    extra_headers: dict[str, str] | None,
    timeout_s: float,
) -> tuple[int, str]:
    headers = dict(extra_headers or {})
    headers["Authorization"] = basic_auth_header(username, password)
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.post(
            url, data=TEST_BODY, headers=headers, allow_redirects=False
        ) as response,
    ):
        body = await response.content.read(2048)
    return response.status, body.decode("utf-8", "replace")[:EXCERPT_CHARS]


def _report_answer(status: int, excerpt: str, duration_ms: float) -> ConnectionReport:
    if 200 <= status < 300:
        outcome, message = (
            Outcome.ACCEPTED,
            f"Connected: the endpoint accepted the test message (HTTP {status}).",
        )
    elif status in (400, 401, 403):
        outcome, message = (
            Outcome.WRONG_CREDENTIALS,
            f"The endpoint refused the username or password (HTTP {status}). "
            "Pega answers 400 too when authentication fails: check both and try "
            "again.",
        )
    elif 300 <= status < 400:
        outcome, message = (
            Outcome.OTHER_ANSWER,
            f"The endpoint answered with a redirect (HTTP {status}). Events are not "
            "sent on after a redirect: enter the URL it redirects to.",
        )
    elif status in (404, 405):
        outcome, message = (
            Outcome.NOT_FOUND,
            f"The server answered, but there is no REST endpoint at this URL "
            f"(HTTP {status}). Check the path.",
        )
    else:
        outcome, message = (
            Outcome.OTHER_ANSWER,
            f"The endpoint answered HTTP {status}, which is not a success; "
            "events would be retried.",
        )
    return ConnectionReport(outcome, message, status, duration_ms, excerpt)


def _report_error(exc: BaseException, url: str, duration_ms: float) -> ConnectionReport:
    kind, message = describe_failure(exc, urlsplit(url).hostname or url)
    return ConnectionReport(Outcome(kind), message, duration_ms=duration_ms)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
