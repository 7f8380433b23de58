"""Whether a process should get work: the checks behind every /readyz (gateway and worker).

A process is ready when its runtime runs, its broker takes messages and, when it records
what it does, its database answers and accepts writes. The answer comes within `within`
seconds however the services behave: a blackholed database is reported as not answering,
not waited for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mas.errors import StoreTimeout, StoreUnavailable

if TYPE_CHECKING:
    from mas.persistence.journal import StoreJournal
    from mas.runtime import Runtime

__all__ = ["READY_WITHIN", "is_ready", "readiness"]

READY_WITHIN = 0.7
"""Seconds a /readyz gives the database: the answer comes within a second, whatever it does."""


async def readiness(
    runtime: Runtime, journal: StoreJournal | None, within: float
) -> dict[str, str]:
    """Each check by name (`runtime`, `transport`, and `store` when `journal` is given):
    `ok`, or why not."""
    checks = {"runtime": "ok" if runtime.running else "stopped"}
    if not runtime.transport.ready:
        checks["transport"] = "disconnected"
    elif journal is not None and journal.relay.failing:
        checks["transport"] = "not taking messages"
    else:
        checks["transport"] = "ok"
    if journal is not None:
        try:
            await journal.store.ping(within)
            checks["store"] = "not accepting writes" if journal.writer.failing else "ok"
        except StoreTimeout:
            checks["store"] = f"no answer within {within:g}s"
        except StoreUnavailable as exc:
            checks["store"] = f"unreachable: {type(exc.__cause__ or exc).__name__}"
    return checks


def is_ready(checks: dict[str, str]) -> bool:
    return all(value == "ok" for value in checks.values())
