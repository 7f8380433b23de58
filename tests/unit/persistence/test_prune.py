"""`mas db prune`: old idempotency marks (and, if asked, audit rows and finished tasks) go;
recent ones, and unfinished tasks, stay."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from sqlalchemy import Table, func, select

from agents.echo import EchoAgent
from mas import Message
from mas.persistence import Store
from mas.persistence.store import messages, processed
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio


async def count(store: Store, table: Table) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def record_some(db: Database, audit: str) -> None:
    async with db.runtime(audit=audit) as rt:
        await rt.spawn(EchoAgent, id="e")
        for n in range(5):
            await rt.tell("agent:e", Message("note", {"n": n}))
        await rt.settle()


async def test_prune_keeps_what_is_newer_than_the_cut(db: Database, store: Store) -> None:
    await record_some(db, audit="tasks")  # handled messages leave idempotency marks only
    assert await count(store, processed) == 5
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert await store.prune(an_hour_ago) == {"processed_messages": 0}
    assert await count(store, processed) == 5


async def test_prune_deletes_marks_audit_and_finished_tasks_older_than_the_cut(
    db: Database, store: Store
) -> None:
    await store.create_task("finished-task", "echo", {})
    await store.create_task("pending-task", "echo", {})
    async with db.runtime(audit="all") as rt:  # the audit rows double as the marks
        await rt.spawn(EchoAgent, id="e")
        for n in range(5):
            await rt.tell("agent:e", Message("note", {"n": n}))
        await rt.tell("agent:e", Message("echo", {}, metadata={"task_id": "finished-task"}))
        await rt.settle()
    finished = await store.get_task("finished-task")
    assert finished is not None and finished.status == "succeeded"
    later = datetime.now(UTC) + timedelta(seconds=1)
    counts = await store.prune(later, audit=True, tasks_too=True)
    assert counts["messages"] == 6
    assert counts["tasks"] == 1
    assert await count(store, messages) == 0
    assert [t.id for t in await store.list_tasks()] == ["pending-task"]  # never deleted


async def test_the_command_prunes_and_says_how_much(db: Database, store: Store) -> None:
    await record_some(db, audit="tasks")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAS_DATABASE")}
    env |= db.cli_env()
    command = [sys.executable, "-m", "mas.cli", "db", "prune", "--older-than", "1h"]
    kept = await anyio.run_process(command, env=env, check=False)
    assert kept.returncode == 0, kept.stderr.decode()
    assert "processed_messages: 0" in kept.stdout.decode()
    refused = await anyio.run_process([*command[:-1], "soon"], env=env, check=False)
    assert refused.returncode == 2
    assert "not a duration" in refused.stderr.decode()
