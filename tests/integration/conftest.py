"""Integration tests need real services; every test in this folder is marked `integration`.

The PostgreSQL fixtures (`pg_schema`, `pg_url`) live in pg_support.py, shared with
tests/unit/persistence.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.pg_support import pg_schema, pg_url

__all__ = ["pg_schema", "pg_url"]

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)
