"""Exponential backoff with jitter, used for message retries and supervisor restarts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mas.actors.backoff import RetryPolicy, backoff_delay


def test_delay_doubles_with_each_retry():
    delays = [backoff_delay(n, base=0.5, maximum=100.0, jitter=0.0) for n in range(1, 6)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_delay_is_capped_at_the_maximum():
    assert backoff_delay(10, base=1.0, maximum=30.0, jitter=0.0) == 30.0
    assert backoff_delay(1000, base=1.0, maximum=30.0, jitter=0.0) == 30.0


@pytest.mark.parametrize("n", [1, 2, 50])
def test_zero_base_means_no_delay(n):
    assert backoff_delay(n, base=0.0, maximum=30.0, jitter=0.5) == 0.0


@given(
    n=st.integers(min_value=1, max_value=60),
    base=st.floats(min_value=0.001, max_value=10.0),
    maximum=st.floats(min_value=0.0, max_value=100.0),
)
def test_without_jitter_delay_is_exactly_min_of_exponential_and_maximum(n, base, maximum):
    assert backoff_delay(n, base, maximum, 0.0) == min(base * 2 ** (n - 1), maximum)


@given(
    n=st.integers(min_value=1, max_value=60),
    base=st.floats(min_value=0.001, max_value=10.0),
    maximum=st.floats(min_value=0.0, max_value=100.0),
    jitter=st.floats(min_value=0.0, max_value=1.0),
)
def test_jitter_stays_within_the_fraction_of_the_unjittered_delay(n, base, maximum, jitter):
    plain = min(base * 2 ** (n - 1), maximum)

    delay = backoff_delay(n, base, maximum, jitter)

    assert delay >= 0.0
    assert plain * (1 - jitter) - 1e-9 <= delay <= plain * (1 + jitter) + 1e-9


def test_jitter_spreads_delays():
    delays = {backoff_delay(3, base=1.0, maximum=100.0, jitter=0.5) for _ in range(50)}

    assert len(delays) > 1
    assert all(2.0 <= delay <= 6.0 for delay in delays)


def test_retry_policy_defaults():
    policy = RetryPolicy()

    assert (policy.max_attempts, policy.base_delay, policy.max_delay, policy.jitter) == (
        3,
        0.1,
        30.0,
        0.1,
    )


def test_retry_policy_delay_follows_backoff_per_attempt():
    policy = RetryPolicy(max_attempts=5, base_delay=0.25, max_delay=1.0, jitter=0.0)

    assert [policy.delay(attempt) for attempt in range(1, 6)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_retry_policy_delay_applies_its_jitter():
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0, jitter=0.2)

    assert all(0.8 <= policy.delay(1) <= 1.2 for _ in range(50))
