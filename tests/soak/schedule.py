"""The soak's faults: what can be injected, a schedule of them, and the log of what was done.

Faults never overlap: each one ends (its process restarted and ready, its proxy restored)
and the system recovers (a task submitted after the end succeeds promptly; bounded) before
the next starts, so what a fault caused can be told apart from what the next one did. A schedule
is either fixed (`fixed_schedule`: every kind once, in a set order, spread over the run; CI
uses it) or seeded random (`random_schedule`: kinds, targets, durations and gaps drawn from
`random.Random(seed)`; the same seed gives the same schedule).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["KINDS", "FaultRecord", "FaultSpec", "fixed_schedule", "random_schedule"]

Kind = Literal[
    "worker_kill9",
    "worker_sigterm",
    "gateway_kill9",
    "gateway_sigterm",
    "broker_cut",
    "broker_blackhole",
    "postgres_outage",
    "postgres_blackhole",
    "redis_outage",
]

KINDS: tuple[Kind, ...] = (
    "worker_kill9",
    "broker_cut",
    "postgres_outage",
    "gateway_kill9",
    "redis_outage",
    "worker_sigterm",
    "broker_blackhole",
    "gateway_sigterm",
    "postgres_blackhole",
)


@dataclass(frozen=True)
class FaultSpec:
    """A fault to inject `at` seconds after the load started; `duration` for lasting kinds."""

    kind: Kind
    at: float
    duration: float = 0.0
    target: str = ""  # the worker slot ("w1", ...) for worker faults


@dataclass
class FaultRecord:
    """What was injected, when (time.time()), and what the harness saw."""

    spec: FaultSpec
    started: float = 0.0
    # When the fault condition was removed: the proxy restored; the gateway's replacement
    # ready; a worker dead (killed, or exited after SIGTERM), since the others carry the
    # load while its replacement starts (detail["restart_s"]); a cut when injected.
    ended: float = 0.0
    victim: str = ""  # the process incarnation signalled (e.g. "w2-1")
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.spec.kind,
            "planned_at": self.spec.at,
            "duration": self.spec.duration,
            "target": self.spec.target,
            "victim": self.victim,
            "started": self.started,
            "ended": self.ended,
            "detail": self.detail,
        }


# Lengths of lasting faults in the fixed schedule: the blackholes outlast the gateway's and
# the broker client's 10 s timeouts (MAS_API__WRITE_TIMEOUT, MAS_AMQP__PUBLISH_TIMEOUT).
FIXED_DURATIONS: dict[Kind, float] = {
    "postgres_outage": 4.0,
    "redis_outage": 4.0,
    "broker_blackhole": 11.0,
    "postgres_blackhole": 11.0,
}


RESTART_ALLOWANCE = 8.0  # seconds a killed or stopped process takes to be back (2 cores)


def fixed_schedule(load_seconds: float, workers: int, *, warmup: float = 4.0) -> list[FaultSpec]:
    """Every kind once, in the order of KINDS, planned evenly over the load.

    A planned time is the earliest a fault starts: it also waits until the previous one has
    ended and the system has recovered, so a short load stretches to fit the schedule.
    """
    slot = max(load_seconds - warmup, 1.0) / len(KINDS)
    return [
        FaultSpec(
            kind,
            round(warmup + n * slot, 1),
            FIXED_DURATIONS.get(kind, 0.0),
            f"w{n % workers + 1}" if kind.startswith("worker") else "",
        )
        for n, kind in enumerate(KINDS)
    ]


def random_schedule(
    load_seconds: float,
    workers: int,
    seed: int,
    *,
    warmup: float = 10.0,
    tail: float = 20.0,
    gap: tuple[float, float] = (5.0, 15.0),
    duration: tuple[float, float] = (3.0, 15.0),
) -> list[FaultSpec]:
    """Faults drawn from `random.Random(seed)` until `load_seconds - tail`.

    Each kind comes once per round in a shuffled order, so a long run sees them all
    about equally often; gaps between faults and durations of lasting ones are uniform.
    """
    rng = random.Random(seed)
    specs: list[FaultSpec] = []
    at = warmup
    round_: list[Kind] = []
    while True:
        if not round_:
            round_ = list(KINDS)
            rng.shuffle(round_)
        kind = round_.pop()
        length = round(rng.uniform(*duration), 1) if kind in FIXED_DURATIONS else 0.0
        if at + length > load_seconds - tail:
            return specs
        target = f"w{rng.randrange(workers) + 1}" if kind.startswith("worker") else ""
        specs.append(FaultSpec(kind, round(at, 1), length, target))
        restart = RESTART_ALLOWANCE if kind.startswith(("worker", "gateway")) else 0.0
        at += length + restart + rng.uniform(*gap)
