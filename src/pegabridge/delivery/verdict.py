"""What an endpoint's answer means for the event and for the installation."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Verdict(StrEnum):
    """The consequence of one attempt."""

    DELIVERED = "delivered"
    # A passing problem: try this event again later.
    RETRY = "retry"
    # The credentials are refused: stop sending for this installation until fixed.
    PAUSE = "pause"
    # A 400: retried like a passing problem, and a run of them pauses (Pega answers 400
    # when authentication fails).
    BAD_REQUEST = "bad_request"


@dataclass(frozen=True)
class AttemptResult:
    """What one POST gave: a status code, or an error before any answer."""

    status_code: int | None
    duration_ms: float
    response_excerpt: str = ""
    error: str = ""
    retry_after: str | None = None
    # The token endpoint refused the OAuth 2.0 client: no request was sent.
    token_refused: bool = False


def judge(result: AttemptResult) -> Verdict:
    """Classify an attempt: 2xx delivered, 401/403 pause, 400 bad request, else retry.

    A token endpoint that refuses the OAuth 2.0 client pauses as a 401 does.

    Timeouts, refused connections, 408, 429 and 5xx are passing problems. Other 4xx
    answers are retried too: a wrong mapping on the Pega side is fixed by a person, and
    the event must still be there when it is.
    """
    code = result.status_code
    if result.token_refused:
        return Verdict.PAUSE
    if code is None:
        return Verdict.RETRY
    if 200 <= code < 300:
        return Verdict.DELIVERED
    if code in (401, 403):
        return Verdict.PAUSE
    if code == 400:
        return Verdict.BAD_REQUEST
    return Verdict.RETRY
