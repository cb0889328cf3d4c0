"""The retry policy: a schedule of days, bounded jitter, Retry-After, dead letters."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pegabridge.delivery.retry import RetryPolicy, parse_retry_after

DAY_S = 24 * 3600.0
NOW = 1_700_000_000.0


class FixedRandom(random.Random):
    """A random source that always draws the same share."""

    def __init__(self, share: float) -> None:
        super().__init__(0)
        self.share = share

    def random(self) -> float:
        return self.share


def test_the_default_schedule_spans_at_least_three_days() -> None:
    assert sum(RetryPolicy().schedule()) >= 3 * DAY_S


def test_an_always_failing_event_is_tried_for_three_days_before_it_is_dead() -> None:
    policy = RetryPolicy(rng=random.Random(7))
    created_at = now = NOW
    attempts = 0

    while (decision := policy.decide(attempts + 1, created_at, now)).next_attempt_at:
        now = decision.next_attempt_at
        attempts += 1

    assert now - created_at >= 3 * DAY_S
    assert attempts < 200


@given(
    attempts=st.integers(min_value=1, max_value=80),
    share=st.floats(min_value=0.0, max_value=0.999999),
)
def test_each_wait_is_shortened_by_at_most_the_jitter_share(
    attempts: int, share: float
) -> None:
    policy = RetryPolicy(jitter=0.25, rng=FixedRandom(share))
    full = policy.delay_s(attempts)

    wait = policy.decide(attempts, NOW, NOW).wait_s

    assert full * 0.75 <= wait <= full


def test_waits_grow_but_never_past_the_maximum_delay() -> None:
    waits = RetryPolicy(base_s=10, max_delay_s=3600).schedule()

    assert waits == sorted(waits)
    assert max(waits) == 3600


def test_a_retry_after_in_seconds_is_honoured_when_longer_than_the_schedule() -> None:
    policy = RetryPolicy(base_s=1, jitter=0.0)

    decision = policy.decide(1, NOW, NOW, parse_retry_after("120", NOW))

    assert decision.next_attempt_at == NOW + 120


def test_a_retry_after_as_an_http_date_is_honoured() -> None:
    header = formatdate(NOW + 90, usegmt=True)

    assert parse_retry_after(header, NOW) == pytest.approx(90, abs=1)


def test_a_retry_after_never_waits_past_the_maximum_delay() -> None:
    policy = RetryPolicy(base_s=1, max_delay_s=600, jitter=0.0)

    assert policy.decide(1, NOW, NOW, 10 * DAY_S).wait_s == 600


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "²", "١٢"])
def test_a_missing_or_unreadable_retry_after_is_ignored(header: str | None) -> None:
    assert parse_retry_after(header, NOW) is None


def test_a_retry_after_date_in_the_past_means_no_extra_wait() -> None:
    assert parse_retry_after(formatdate(NOW - 60, usegmt=True), NOW) == 0.0


def test_an_event_older_than_the_maximum_age_becomes_a_dead_letter() -> None:
    policy = RetryPolicy(max_age_s=4 * DAY_S)

    assert policy.decide(30, NOW - 4 * DAY_S, NOW).is_dead


def test_a_young_event_is_not_a_dead_letter() -> None:
    assert not RetryPolicy().decide(1, NOW, NOW).is_dead
