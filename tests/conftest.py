"""Shared test configuration: asyncio for anyio tests, and the `integration` marker policy.

Tests that need RabbitMQ, PostgreSQL or Redis are marked `integration` and skip with the
reason when the service is unreachable — unless MAS_REQUIRE_SERVICES=1 (CI), where an
unreachable service fails the test instead.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def services_required() -> bool:
    return os.environ.get("MAS_REQUIRE_SERVICES") == "1"


def require_service(name: str, reachable: bool, detail: str) -> None:
    """Skip (or, in CI, fail) a test whose service is not reachable."""
    if reachable:
        return
    message = f"{name} unreachable ({detail})"
    if services_required():
        pytest.fail(f"{message}; MAS_REQUIRE_SERVICES=1 forbids skipping")
    pytest.skip(message)
