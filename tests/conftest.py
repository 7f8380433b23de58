"""Shared test configuration: asyncio for anyio tests, and the `integration` marker policy.

Tests that need RabbitMQ, PostgreSQL or Redis are marked `integration` and skip with the
reason when the service is unreachable — unless MAS_REQUIRE_SERVICES=1 (CI), where an
unreachable service fails the test instead.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

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


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """mas's logs (structlog and the standard library's) as JSON lines, DEBUG and up."""
    from mas.observability import configure_logging, reset_logging

    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    yield stream
    reset_logging()
