"""When to try an event again: a policy computes a decision, the outbox stores it.

The schedule doubles from ``base_s`` up to ``max_delay_s`` and stops when the event
is older than ``max_age_s`` (four days by default, so a Pega outage of three days
still ends with everything delivered). Each wait is shortened by a random share of up
to ``jitter`` so that a recovered endpoint is not hit by the whole backlog at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime


@dataclass(frozen=True)
class RetryDecision:
    """The next attempt time, or ``None`` when the event becomes a dead letter."""

    next_attempt_at: float | None
    wait_s: float

    @property
    def is_dead(self) -> bool:
        return self.next_attempt_at is None


@dataclass(frozen=True)
class RetryPolicy:
    """A jittered exponential backoff bounded in total time."""

    base_s: float = 10.0
    max_delay_s: float = 6 * 3600.0
    max_age_s: float = 4 * 24 * 3600.0
    jitter: float = 0.25
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay_s(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt, before jitter."""
        exponent = min(max(attempts - 1, 0), 60)
        return float(min(self.base_s * (2**exponent), self.max_delay_s))

    def decide(
        self,
        attempts: int,
        created_at: float,
        now: float,
        retry_after_s: float | None = None,
    ) -> RetryDecision:
        """What follows ``attempts`` failed attempts of an event made at ``created_at``.

        A ``Retry-After`` of the endpoint is honoured when it asks for more patience
        than the schedule, up to ``max_delay_s``.
        """
        wait_s = self.delay_s(attempts) * (1 - self.jitter * self.rng.random())
        if retry_after_s is not None:
            wait_s = max(wait_s, min(retry_after_s, self.max_delay_s))

        if now + wait_s - created_at > self.max_age_s:
            return RetryDecision(next_attempt_at=None, wait_s=0.0)
        return RetryDecision(next_attempt_at=now + wait_s, wait_s=wait_s)

    def schedule(self, limit: int = 200) -> list[float]:
        """The waits of an event that always fails, without jitter."""
        waits: list[float] = []
        elapsed = 0.0
        for attempts in range(1, limit + 1):
            wait = self.delay_s(attempts)
            if elapsed + wait > self.max_age_s:
                break
            waits.append(wait)
            elapsed += wait
        return waits


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3), if any."""
    if not value:
        return None
    value = value.strip()
    # ``str.isdigit`` is true of "²" and other non-ASCII digits that ``float`` refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - now, 0.0)
