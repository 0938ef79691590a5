"""The retry policy: exponential backoff with jitter, Retry-After, bounds on attempts and total time."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from airflow_provider_qarnot.client import RetryPolicy
from airflow_provider_qarnot.client.retry import parse_retry_after


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=False)
    assert [policy.backoff(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_stays_within_half_and_full_delay() -> None:
    policy = RetryPolicy(base_delay=2.0, max_delay=100.0, rng=random.Random(7))
    for attempt in range(1, 6):
        full = 2.0 * 2 ** (attempt - 1)
        delays = {policy.backoff(attempt) for _ in range(20)}
        assert all(full / 2 <= d <= full for d in delays)
        assert len(delays) > 1


def test_no_delay_once_attempts_are_used_up() -> None:
    policy = RetryPolicy(max_attempts=3, jitter=False)
    assert policy.next_delay(1, 0.0) is not None
    assert policy.next_delay(2, 0.0) is not None
    assert policy.next_delay(3, 0.0) is None


def test_total_time_bounds_retries() -> None:
    policy = RetryPolicy(max_attempts=100, base_delay=1.0, max_elapsed=10.0, jitter=False)
    assert policy.next_delay(1, 8.0) == 1.0
    assert policy.next_delay(2, 8.5) is None


def test_retry_after_is_honoured_as_given_when_it_fits_in_the_total_time() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=30.0, max_elapsed=120.0, jitter=False)
    assert policy.next_delay(1, 0.0, retry_after=7.0) == 7.0
    assert policy.next_delay(1, 0.0, retry_after=60.0) == 60.0, "not cut to max_delay: that earns another 429"
    assert policy.next_delay(1, 0.0, retry_after=3600.0) == 30.0, "past the total time: try once more, not give up"
    assert policy.next_delay(1, 100.0, retry_after=25.0) is None


def test_policy_round_trips_through_primitives() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=2.0, max_elapsed=9.0, jitter=False)
    assert RetryPolicy.from_dict(policy.to_dict()) == policy


def test_invalid_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    assert RetryPolicy.none().next_delay(1, 0.0) is None


@pytest.mark.parametrize(("header", "expected"), [("5", 5.0), ("0.5", 0.5), ("-3", 0.0), (None, None), ("soon", None)])
def test_parse_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_parse_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    header = format_datetime(now + timedelta(seconds=12), usegmt=True)
    assert parse_retry_after(header, now=now.timestamp()) == pytest.approx(12.0)
