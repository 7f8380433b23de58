"""The actor suites run on both runtimes: the test kit's and the one production runs.

`make_runtime(**settings)` builds a `TestRuntime` (manual clock, JSON on every hop, fault
plan) or a plain `Runtime` (loop clock, no serialization, so local tells take the fast path).
A test that needs the manual clock or fault injection builds a `TestRuntime` itself and says
so with the `test_runtime_only` marker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mas import Runtime, Settings
from mas.testing import TestRuntime
from mas.transports.base import Transport

MakeRuntime = Callable[..., Runtime]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "test_runtime_only: needs the TestRuntime's manual clock or fault plan, so it does "
        "not run on a plain Runtime",
    )


@pytest.fixture(params=["test_runtime", "runtime"])
def make_runtime(request: pytest.FixtureRequest) -> MakeRuntime:
    """A factory of runtimes of the parametrized kind, taking settings as keywords."""

    def make(
        settings: Settings | None = None,
        *,
        transport: Transport | None = None,
        node_id: str | None = None,
        **overrides: Any,
    ) -> Runtime:
        if request.param == "test_runtime":
            return TestRuntime(settings, transport=transport, node_id=node_id, **overrides)
        if settings is None:
            settings = Settings(**({"log_level": "WARNING"} | overrides))
        elif overrides:
            settings = settings.model_copy(update=overrides)
        return Runtime(settings, transport=transport, node_id=node_id)

    return make
