"""PostgreSQL fixtures shared by tests/integration and tests/unit/persistence.

Every test gets its own schema `mas_test_<hex>` in the `test` database (created here, dropped
with CASCADE afterwards), so tests never see each other's rows and never touch anything
outside their schema. When PostgreSQL is unreachable the test skips — or fails under
MAS_REQUIRE_SERVICES=1 (see `require_service` in tests/conftest.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import require_service

__all__ = ["PG_URL", "PgSchema", "admin_connection", "pg_schema", "pg_url", "postgres_dsn"]

PG_URL = os.environ.get(
    "MAS_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)

_reachable: tuple[bool, str] | None = None


@dataclass(frozen=True)
class PgSchema:
    """A fresh, empty PostgreSQL schema and the URL that reaches its database."""

    url: str
    schema: str


def postgres_dsn(url: str = PG_URL) -> str:
    """The SQLAlchemy URL as a plain libpq DSN for asyncpg (admin connections)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(postgres_dsn(), timeout=5)


async def _check_reachable() -> tuple[bool, str]:
    global _reachable
    if _reachable is None:
        try:
            connection = await asyncpg.connect(postgres_dsn(), timeout=3)
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            _reachable = (False, f"{type(exc).__name__}: {exc}")
        else:
            await connection.close()
            _reachable = (True, "")
    return _reachable


@pytest.fixture
async def pg_schema(anyio_backend: str) -> AsyncIterator[PgSchema]:
    """A unique schema `mas_test_<hex>`, dropped (CASCADE) after the test."""
    reachable, detail = await _check_reachable()
    require_service("PostgreSQL", reachable, f"{PG_URL}: {detail}")
    schema = f"mas_test_{uuid.uuid4().hex[:12]}"
    admin = await admin_connection()
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await admin.close()
    try:
        yield PgSchema(PG_URL, schema)
    finally:
        admin = await admin_connection()
        try:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await admin.close()


@pytest.fixture
def pg_url(pg_schema: PgSchema) -> str:
    return pg_schema.url
