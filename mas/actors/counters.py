"""What the agents of one type did on this node, as plain integers the metrics read.

The drain loop only adds to an attribute (as cheap as the single counter it replaced); the
Prometheus collector turns these into labelled metric families when `/metrics` is scraped.
Every agent of a type shares one `AgentCounters`, kept for the life of the runtime, so a
counter never goes down when an agent stops and sums across processes are exact.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["DURATION_BOUNDS", "AgentCounters", "Durations"]

DURATION_BOUNDS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)
"""Upper bounds (seconds) of the handler-duration buckets; one more bucket holds the rest."""


class Durations:
    """A histogram of handler durations: a count per bucket of `DURATION_BOUNDS`, and a sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (`le`).
        self.counts[bisect_left(DURATION_BOUNDS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[int]:
        """Counts of values at most each bound, then of all values (Prometheus's `le`)."""
        running, out = 0, []
        for count in self.counts:
            running += count
            out.append(running)
        return out


class AgentCounters:
    """Counters of one agent type on one node; the drain loop and supervisors add to them.

    `succeeded` and `failed` count handler runs (a retried message fails once per attempt);
    `retried` the failed runs that were scheduled again, `dead_lettered` those that were not;
    `restarts` the agents a supervisor restarted; `duplicates` messages skipped as already
    handled. Durations are observed only while the runtime times handlers (metrics served).
    """

    __slots__ = (
        "agent_type",
        "dead_lettered",
        "duplicates",
        "failed",
        "failed_durations",
        "restarts",
        "retried",
        "succeeded",
        "succeeded_durations",
    )

    def __init__(self, agent_type: str) -> None:
        self.agent_type = agent_type
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.restarts = 0
        self.duplicates = 0
        self.succeeded_durations = Durations()
        self.failed_durations = Durations()
