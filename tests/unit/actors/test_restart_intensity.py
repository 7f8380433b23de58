"""RestartIntensity: at most `max_restarts` restarts in any sliding window of `period` seconds."""

from __future__ import annotations

from itertools import accumulate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mas.actors.supervisor import RestartIntensity


def test_zero_max_restarts_fails_on_the_first_restart():
    assert RestartIntensity(max_restarts=0, period=10.0).record(0.0) is False


def test_restarts_within_the_limit_are_allowed_and_one_more_is_not():
    intensity = RestartIntensity(max_restarts=2, period=10.0)

    assert intensity.record(0.0) is True
    assert intensity.record(1.0) is True
    assert intensity.record(2.0) is False
    assert intensity.recent == 3


def test_restarts_older_than_the_period_no_longer_count():
    intensity = RestartIntensity(max_restarts=1, period=10.0)

    assert intensity.record(0.0) is True
    assert intensity.record(10.0) is True  # the restart at 0 is exactly `period` old: gone
    assert intensity.recent == 1
    assert intensity.record(19.9) is False


def test_reset_forgets_past_restarts():
    intensity = RestartIntensity(max_restarts=1, period=10.0)
    intensity.record(0.0)
    intensity.record(1.0)

    intensity.reset()

    assert intensity.recent == 0
    assert intensity.record(2.0) is True


def _brute_force(times, max_restarts, period):
    """After each restart at t: allowed iff at most max_restarts restarts lie in (t - period, t]."""
    answers = []
    for i, t in enumerate(times):
        in_window = sum(1 for s in times[: i + 1] if t - period < s <= t)
        answers.append(in_window <= max_restarts)
    return answers


_gaps = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=5).map(float),
        st.floats(min_value=0.0, max_value=5.0, allow_nan=False),
    ),
    max_size=40,
)


@given(
    gaps=_gaps,
    start=st.floats(min_value=-100.0, max_value=1000.0),
    max_restarts=st.integers(min_value=0, max_value=6),
    period=st.one_of(
        st.integers(min_value=1, max_value=10).map(float),
        st.floats(min_value=0.001, max_value=20.0),
    ),
)
def test_record_agrees_with_a_brute_force_sliding_window(gaps, start, max_restarts, period):
    times = list(accumulate(gaps, initial=start))
    intensity = RestartIntensity(max_restarts, period)

    answers = [intensity.record(t) for t in times]

    assert answers == _brute_force(times, max_restarts, period)


@pytest.mark.parametrize("max_restarts", [1, 3])
def test_restarts_at_the_same_instant_all_count(max_restarts):
    intensity = RestartIntensity(max_restarts, period=1.0)

    answers = [intensity.record(5.0) for _ in range(max_restarts + 1)]

    assert answers == [True] * max_restarts + [False]
