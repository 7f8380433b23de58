"""Outage: one log line when a service stops answering, one when it answers again.

A hot path that hits a dead service thousands of times a second must not log thousands of
warnings: one per outage (per component) tells the operator what they need to know, and one
line says when it is over and how long it lasted. Used for the database, the broker and
Redis, so every outage reads the same: `<service>_unavailable` then `<service>_recovered`.
"""

from __future__ import annotations

import math
import time

import structlog

from mas.errors import ConfigError

__all__ = ["Outage"]

_log = structlog.get_logger("mas.outages")


class Outage:
    """Tracks whether a service answers one component; logs each outage once; can fail fast.

    With a `cooldown`, a failure also opens a short window in which `skip()` is true, so the
    caller answers "unknown" at once instead of asking again: a service that hangs (rather
    than refusing connections) costs a full timeout per call, and every message waiting that
    long would stall the node. After the window one call probes while the others keep
    skipping; the first success closes it.
    """

    __slots__ = ("_component", "_cooldown", "_down_since", "_failures", "_service", "_skip_until")

    def __init__(self, service: str, component: str, *, cooldown: float = 0.0) -> None:
        if not math.isfinite(cooldown) or cooldown < 0:
            raise ConfigError(f"an outage cooldown must be 0 or more seconds, not {cooldown}")
        self._service = service
        self._component = component
        self._cooldown = cooldown
        self._down_since: float | None = None
        self._failures = 0
        self._skip_until = 0.0

    @property
    def down(self) -> bool:
        """True between a failure and the next success."""
        return self._down_since is not None

    def skip(self) -> bool:
        """True when the caller should not ask the service now (cooldown after a failure)."""
        if not self._skip_until:
            return False
        now = time.monotonic()
        if now < self._skip_until:
            return True
        # This caller probes; the others keep skipping until it answers (or one more cooldown
        # passes, so a cancelled probe cannot close the service off for good).
        self._skip_until = now + self._cooldown
        return False

    def failed(self, operation: str, error: BaseException) -> None:
        """A call failed: the first failure of an outage is logged (a warning)."""
        now = time.monotonic()
        if self._cooldown:
            self._skip_until = now + self._cooldown
        self._failures += 1
        if self._down_since is None:
            self._down_since = now
            _log.warning(
                f"{self._service}_unavailable",
                component=self._component,
                operation=operation,
                error_type=type(error).__name__,
                error=str(error),
            )

    def ok(self) -> None:
        """A call succeeded: ends the outage, if there was one (logged with its length)."""
        since = self._down_since
        if since is not None:
            self._down_since = None
            self._skip_until = 0.0
            failures, self._failures = self._failures, 0
            _log.info(
                f"{self._service}_recovered",
                component=self._component,
                duration=round(time.monotonic() - since, 3),
                failures=failures,
            )
