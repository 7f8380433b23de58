"""Exponential backoff with jitter, shared by message retries and supervisor restarts."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "backoff_delay"]


def backoff_delay(n: int, base: float, maximum: float, jitter: float) -> float:
    """Delay before the n-th retry (n >= 1): base * 2**(n-1), capped, then +/- jitter.

    Jitter spreads retries of many agents that failed together (a shared dependency went down)
    so that they do not all come back in the same instant.
    """
    delay = min(base * (2 ** (n - 1)), maximum) if base > 0 else 0.0
    if jitter and delay:
        delay *= 1.0 + random.uniform(-jitter, jitter)
    return max(delay, 0.0)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a failing message is tried, and how long to wait between tries."""

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 30.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        return backoff_delay(attempt, self.base_delay, self.max_delay, self.jitter)
