"""The database goes away mid-run and comes back: nothing is lost, nothing is faked.

The runtime writes through its own PostgreSQL role, so the fault hits only this test: its
connections are terminated, the role may not log in, and the schema's `messages` table is
renamed away — every batch fails. While that lasts, tasks that were handled must not be
marked succeeded (the batch recording them did not commit) and `settle()` must not return.
Once the database is back, the writer's retries commit everything that was kept.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from agents.echo import EchoAgent
from mas import Message
from mas.config import Settings
from mas.persistence import Store, StoreJournal
from mas.runtime import Runtime
from tests.integration.pg_support import PgSchema, admin_connection

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def store(pg_schema: PgSchema) -> AsyncIterator[Store]:
    """The test's own view of the schema (as the admin user, untouched by the fault)."""
    opened = await Store.open(pg_schema.url, schema=pg_schema.schema, migrate=True)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def runtime_url(pg_schema: PgSchema, store: Store) -> AsyncIterator[str]:
    """A URL for a throwaway login role with full rights on the test schema only."""
    role = f"mas_test_{uuid.uuid4().hex[:12]}"
    schema = pg_schema.schema
    admin = await admin_connection()
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"')
        await admin.execute(f'GRANT ALL ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"')
    finally:
        await admin.close()
    try:
        yield make_url(pg_schema.url).set(username=role).render_as_string(hide_password=False)
    finally:
        admin = await admin_connection()
        try:
            await terminate_backends(admin, role)
            await admin.execute(f'DROP OWNED BY "{role}"')
            await admin.execute(f'DROP ROLE "{role}"')
        finally:
            await admin.close()


async def terminate_backends(admin: asyncpg.Connection, role: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
    )


async def break_database(pg_schema: PgSchema, role: str) -> None:
    admin = await admin_connection()
    try:
        await admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
        await terminate_backends(admin, role)
        await admin.execute(f'ALTER TABLE "{pg_schema.schema}".messages RENAME TO messages_away')
    finally:
        await admin.close()


async def repair_database(pg_schema: PgSchema, role: str) -> None:
    admin = await admin_connection()
    try:
        await admin.execute(f'ALTER TABLE "{pg_schema.schema}".messages_away RENAME TO messages')
        await admin.execute(f'ALTER ROLE "{role}" LOGIN')
    finally:
        await admin.close()


async def count_rows(pg_schema: PgSchema, table: str) -> int:
    admin = await admin_connection()
    try:
        return int(await admin.fetchval(f'SELECT count(*) FROM "{pg_schema.schema}".{table}'))
    finally:
        await admin.close()


async def send_tasks(rt: Runtime, store: Store, prefix: str, count: int) -> list[str]:
    """Create `count` tasks and send their messages to agent e, back to back."""
    ids = [f"{prefix}-{n}" for n in range(count)]
    for task_id in ids:
        await store.create_task(task_id, "echo", {"task": task_id}, target="agent:e")
        await rt.tell("agent:e", Message("echo", {"task": task_id}, metadata={"task_id": task_id}))
    return ids


async def statuses(store: Store, ids: list[str]) -> dict[str, str]:
    tasks = [await store.get_task(task_id) for task_id in ids]
    return {task.id: task.status for task in tasks if task is not None}


@pytest.mark.parametrize("during_outage", [1, 5])
async def test_tasks_handled_while_the_database_is_away_are_recorded_once_it_is_back(
    pg_schema: PgSchema, store: Store, runtime_url: str, during_outage: int
) -> None:
    role = make_url(runtime_url).username
    assert role is not None
    settings = Settings(
        database_url=runtime_url,
        database_schema=pg_schema.schema,
        persist=True,
        log_level="CRITICAL",
        shutdown_timeout=5,
    )
    async with Runtime(settings) as rt:
        journal = rt.journal
        assert isinstance(journal, StoreJournal)
        journal.writer.close_timeout = 2  # a failing test should not hang 10s in shutdown
        await rt.spawn(EchoAgent, id="e")
        before = await send_tasks(rt, store, "before", 3)
        await rt.settle()
        assert set((await statuses(store, before)).values()) == {"succeeded"}

        await break_database(pg_schema, role)
        during = await send_tasks(rt, store, "during", during_outage)
        with pytest.raises(TimeoutError):
            await rt.settle(timeout=2)  # the handlers ran, but their records cannot commit
        assert rt.handled == len(before) + len(during)
        assert await statuses(store, during) == dict.fromkeys(during, "pending")
        assert await count_rows(pg_schema, "messages_away") == len(before)

        await repair_database(pg_schema, role)
        await rt.settle(timeout=15)  # the writer retries at least every 5s
        tasks = [await store.get_task(task_id) for task_id in before + during]
        assert [(t.id, t.status, t.attempts) for t in tasks if t is not None] == [
            (task_id, "succeeded", 1) for task_id in before + during
        ]
        assert await store.count("messages") == len(before) + len(during)
        assert await store.handled_count() == len(before) + len(during)
        audited = {m.payload["task"] for m in await store.agent_messages("e", limit=100)}
        assert audited == set(before + during)
