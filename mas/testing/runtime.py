"""TestRuntime: a Runtime for tests — manual clock, JSON on every hop, fault injection."""

from __future__ import annotations

from typing import Any

from mas.actors.clock import Clock
from mas.actors.journal import Journal
from mas.config import Settings
from mas.errors import ConfigError
from mas.runtime import Runtime
from mas.testing.clock import ManualClock
from mas.testing.faults import FaultPlan
from mas.transports.base import Transport

__all__ = ["TestRuntime"]


class TestRuntime(Runtime):
    """A Runtime whose time is a `ManualClock` and whose messages all cross as JSON.

    `await rt.settle()` returns when nothing is left to happen (jumping the clock over backoff
    delays); `rt.faults` drops or duplicates deliveries; `rt.clock.advance(s)` moves time.
    Only settings and these two differ from a `Runtime`: the faults reach the production
    delivery path as its `faults` hook, so tests run the code production runs.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        transport: Transport | None = None,
        clock: Clock | None = None,
        node_id: str | None = None,
        journal: Journal | None = None,
        faults: FaultPlan | None = None,
        **overrides: Any,
    ) -> None:
        unknown = set(overrides) - set(Settings.model_fields)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {', '.join(sorted(unknown))}: see mas.Settings for the names"
            )
        if settings is None:
            defaults: dict[str, Any] = {"serialize_messages": True, "log_level": "WARNING"}
            settings = Settings(**(defaults | overrides))
        elif overrides:
            settings = settings.model_copy(update=overrides)
        if faults is None:
            faults = FaultPlan()
        self.manual_clock = clock if isinstance(clock, ManualClock) else ManualClock()
        super().__init__(
            settings,
            transport=transport,
            clock=clock if clock is not None else self.manual_clock,
            node_id=node_id,
            journal=journal,
            faults=faults,
        )
        self.faults = faults
