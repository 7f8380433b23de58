"""pytest plugin (entry point `mas`): fixtures for testing agents.

- `mas_runtime`: a started `TestRuntime` (manual clock, JSON on every hop), shut down after
  the test. Use it from tests marked `@pytest.mark.anyio`.
- `probe`: a fresh `Probe`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mas.testing.probe import Probe
from mas.testing.runtime import TestRuntime


@pytest.fixture
async def mas_runtime() -> AsyncIterator[TestRuntime]:
    runtime = TestRuntime()
    async with runtime:
        yield runtime


@pytest.fixture
def probe() -> Probe:
    return Probe()
