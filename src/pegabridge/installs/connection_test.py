"""The "test connection" button: one real request to an endpoint, told in plain words.

The request is a POST with Basic auth and the extra headers of the installation, like
a delivery, but its body is a small JSON object marked as a connection test rather than
an interaction, so that nothing is recorded in the outbox. What came back is sorted into
one of a few outcomes a marketer can act on.

With an OAuth 2.0 client the test first asks the token endpoint for a token, as a
delivery would; when none comes, the outcome says what the token endpoint answered
(each such outcome starts with ``token_``), otherwise the test request carries it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import aiohttp

from pegabridge.delivery.client import USER_AGENT, basic_auth_header, describe_failure
from pegabridge.delivery.oauth import TokenError, fetch_token
from pegabridge.installs.endpoint_guard import EndpointGuard, EndpointRefused
from pegabridge.installs.service import OAuthClient

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
    # What the token endpoint of an OAuth 2.0 client answered instead of a token.
    TOKEN_REFUSED = "token_refused"
    TOKEN_NOT_FOUND = "token_endpoint_not_found"
    TOKEN_BAD_ANSWER = "token_bad_answer"
    TOKEN_OTHER_ANSWER = "token_other_answer"
    TOKEN_TIMED_OUT = "token_timed_out"
    TOKEN_CERTIFICATE = "token_certificate_not_trusted"
    TOKEN_NO_SUCH_NAME = "token_name_does_not_resolve"
    TOKEN_CONNECTION_REFUSED = "token_connection_refused"
    TOKEN_BLOCKED = "token_address_not_allowed"
    TOKEN_OTHER_ERROR = "token_other_error"


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
    oauth: OAuthClient | None = None,
) -> ConnectionReport:
    """Send one test request to ``url`` and say what came back; never raises.

    With ``oauth`` the request carries a token from its token endpoint instead of the
    username and password.
    """
    started = time.perf_counter()
    refusal = await _refused_address(guard, url, oauth)
    if refusal is not None:
        return refusal

    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            authorization = await _authorization(session, username, password, oauth)
        except TokenError as exc:
            return ConnectionReport(
                Outcome(exc.kind), exc.message, exc.status_code, _ms_since(started)
            )
        try:
            status, excerpt = await _post(session, url, authorization, extra_headers)
        except Exception as exc:
            return _report_error(exc, url, _ms_since(started))
    return _report_answer(status, excerpt, _ms_since(started), oauth is not None)


async def _refused_address(
    guard: EndpointGuard, url: str, oauth: OAuthClient | None
) -> ConnectionReport | None:
    """A report when the endpoint or the token endpoint points where it may not."""
    try:
        await guard.check_url(url)
    except EndpointRefused as exc:
        return ConnectionReport(Outcome.BLOCKED, str(exc))
    except OSError as exc:
        return _report_error(exc, url, 0.0)
    if oauth is None:
        return None

    try:
        await guard.check_url(oauth.token_url)
    except EndpointRefused as exc:
        return ConnectionReport(Outcome.TOKEN_BLOCKED, f"The token URL: {exc}")
    except OSError as exc:
        kind, sentence = describe_failure(exc, urlsplit(oauth.token_url).hostname or "")
        return ConnectionReport(Outcome(f"token_{kind}"), f"The token URL: {sentence}")
    return None


async def _authorization(
    session: aiohttp.ClientSession,
    username: str,
    password: str,
    oauth: OAuthClient | None,
) -> str:
    if oauth is None:
        return basic_auth_header(username, password)
    return (await fetch_token(session, oauth)).authorization


async def _post(
    session: aiohttp.ClientSession,
    url: str,
    authorization: str,
    extra_headers: dict[str, str] | None,
) -> tuple[int, str]:
    headers = dict(extra_headers or {})
    headers["Authorization"] = authorization
    headers["Content-Type"] = "application/json"
    headers["User-Agent"] = USER_AGENT
    async with session.post(
        url, data=TEST_BODY, headers=headers, allow_redirects=False
    ) as response:
        body = await response.content.read(2048)
    return response.status, body.decode("utf-8", "replace")[:EXCERPT_CHARS]


def _report_answer(
    status: int, excerpt: str, duration_ms: float, with_token: bool = False
) -> ConnectionReport:
    if 200 <= status < 300:
        outcome, message = (
            Outcome.ACCEPTED,
            f"Connected: the endpoint accepted the test message (HTTP {status})."
            + (" The token endpoint issued a token for it." if with_token else ""),
        )
    elif status in (400, 401, 403) and with_token:
        outcome, message = (
            Outcome.WRONG_CREDENTIALS,
            f"The token endpoint issued a token, but the endpoint refused it (HTTP "
            f"{status}). Check what the OAuth 2.0 client registration may access.",
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
