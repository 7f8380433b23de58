"""Database fixtures for the persistence tests: SQLite always, PostgreSQL when reachable.

- `sqlite_url`: a fresh SQLite file under the test's tmp_path.
- `db`: parametrized over ["sqlite", "postgresql"]; the PostgreSQL case is marked
  `integration` and runs in its own throwaway schema. Not migrated: use `store` for that.
- `store`: a `Store` on `db`, migrated to head, closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mas.persistence import Store
from tests.integration.pg_support import PgSchema, pg_schema
from tests.unit.persistence.databases import Database

__all__ = ["Database", "db", "pg_schema", "sqlite_url", "store"]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/mas.db"


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)],
)
def db(request: pytest.FixtureRequest, sqlite_url: str) -> Database:
    if request.param == "sqlite":
        return Database("sqlite", sqlite_url)
    schema: PgSchema = request.getfixturevalue("pg_schema")
    return Database("postgresql", schema.url, schema.schema)


@pytest.fixture
async def store(db: Database, anyio_backend: str) -> AsyncIterator[Store]:
    opened = await db.open_store(migrate=True)
    try:
        yield opened
    finally:
        await opened.close()
