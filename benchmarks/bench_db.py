"""A throwaway PostgreSQL schema for a benchmark run: created and migrated, dropped after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from mas.errors import MasError
from mas.persistence import Store
from mas.persistence.engine import connect

__all__ = ["PgUnreachable", "migrated_pg_schema"]


class PgUnreachable(Exception):
    """The benchmark's PostgreSQL cannot be reached: its backend is reported skipped."""


@asynccontextmanager
async def migrated_pg_schema(url: str) -> AsyncIterator[str]:
    """A new schema at `url`, migrated to head, yielded by name and dropped on exit.

    Raises:
        PgUnreachable: the database cannot be reached (not a failure of the benchmark).
    """
    schema = f"mas_bench_{uuid.uuid4().hex[:8]}"
    try:
        engine = await connect(url)
    except MasError as exc:
        raise PgUnreachable(str(exc)) from exc
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await (await Store.open(url, schema=schema, migrate=True)).close()
        yield schema
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        await engine.dispose()
