"""The soak's schedules: the fixed one has every kind once; a seed gives the same faults."""

from __future__ import annotations

from collections import Counter

from tests.soak.schedule import FIXED_DURATIONS, KINDS, fixed_schedule, random_schedule


def test_the_fixed_schedule_has_every_kind_once_in_order() -> None:
    specs = fixed_schedule(60.0, workers=3)
    assert [s.kind for s in specs] == list(KINDS)
    assert [s.at for s in specs] == sorted(s.at for s in specs)
    assert all(s.duration == FIXED_DURATIONS.get(s.kind, 0.0) for s in specs)
    assert {s.target for s in specs if s.kind.startswith("worker")} <= {"w1", "w2", "w3"}
    assert all(s.target == "" for s in specs if not s.kind.startswith("worker"))


def test_a_seed_gives_the_same_random_schedule_and_rounds_cover_every_kind() -> None:
    first = random_schedule(600.0, workers=3, seed=7)
    assert first == random_schedule(600.0, workers=3, seed=7)
    assert first != random_schedule(600.0, workers=3, seed=8)
    counts = Counter(s.kind for s in first)
    assert set(counts) == set(KINDS)
    assert max(counts.values()) - min(counts.values()) <= 1  # kinds come once per round
    assert all(3.0 <= s.duration <= 15.0 for s in first if s.kind in FIXED_DURATIONS)
    ends = [s.at + s.duration for s in first]
    assert all(a < b for a, b in zip(ends, [s.at for s in first[1:]], strict=False))
    assert ends[-1] <= 600.0 - 20.0  # load goes on after the last fault
