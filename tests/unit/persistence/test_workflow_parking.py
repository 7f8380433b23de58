"""Parked handlers across processes: a handler in a long durable wait gives up its agent;
its wake-up (the message's outbox row, due when the wait ends) is in the record, so the
timer fires after the process that parked it is gone, and a signal wakes it at once.

SQLite and PostgreSQL. What a user sees through the gateway is in
tests/unit/api/test_parked_tasks.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from sqlalchemy import select

from mas import Agent, Message, Runtime
from mas.config import OutboxSettings, WorkflowSettings
from mas.persistence import Batch, Store
from mas.persistence.models import outbox
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

effects: Counter[str] = Counter()


def count(name: str) -> str:
    effects[name] += 1
    return name


class Sleeper(Agent):
    """A step, a durable sleep long enough to park, another step."""

    type = "sleeper"
    finished: ClassVar[asyncio.Event]
    woke_at: ClassVar[float] = 0.0

    async def handle_message(self, message: Message) -> None:
        ctx = self.ctx
        await ctx.step("before", count, "before")
        await ctx.sleep(float(message.payload["seconds"]))
        await ctx.step("after", count, "after")
        type(self).woke_at = asyncio.get_running_loop().time()
        type(self).finished.set()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    effects.clear()
    Sleeper.finished = asyncio.Event()


def _settings(db: Database, **overrides: Any) -> Any:
    return db.settings(
        workflow=WorkflowSettings(park_after=0.1),
        outbox=OutboxSettings(lease=2.0, sweep_interval=0.05),
        **overrides,
    )


async def _wake_at(store: Store, message_id: str) -> tuple[str | None, datetime] | None:
    async with store.reading() as conn:
        row = (
            await conn.execute(
                select(outbox.c.owner, outbox.c.available_at).where(outbox.c.id == message_id)
            )
        ).first()
    return None if row is None else (row[0], row[1])


async def test_a_timer_fires_after_the_process_that_parked_it_stopped(db: Database) -> None:
    store = await db.open_store(migrate=True)
    request = Message("nap", {"seconds": 1.0}, target="type:sleeper")
    try:
        first = Runtime(_settings(db), node_id="first")
        async with first:
            await first.spawn(Sleeper, id="sleeper")
            await first.tell("type:sleeper", request)
            await _until(lambda: first.stats()["parked"] == 1)
        assert effects == {"before": 1}
        wake = await _wake_at(store, request.id)
        assert wake is not None and wake[0] is None  # due later, held by no node

        loop = asyncio.get_running_loop()
        async with Runtime(_settings(db), node_id="second") as second:
            await second.spawn(Sleeper, id="sleeper")
            started = loop.time()
            await asyncio.wait_for(Sleeper.finished.wait(), 30)
            journal = second.journal
            assert journal is not None
            await journal.flush()
        assert effects == {"before": 1, "after": 1}  # the first step did not run again
        assert await _wake_at(store, request.id) is None  # the wake-up went with the handling
        assert Sleeper.woke_at - started < 30
    finally:
        await store.close()


async def test_a_wake_up_outlives_a_late_delete_by_the_rows_earlier_owner(
    db: Database,
) -> None:
    """The node that sent the message deletes its row once it is on its way; when that
    delete comes after the handler parked (a slow commit), the wake-up that replaced the
    row must stay."""
    store = await db.open_store(migrate=True)
    try:
        message = Message("nap", {}, target="type:sleeper")
        now = datetime.now(UTC)
        row = {
            "id": message.id,
            "message": message.to_dict(),
            "owner": "gateway",
            "available_at": now,
            "attempts": 0,
            "created_at": now,
        }
        await store.apply(Batch(outbox={message.id: row}))
        later = now + timedelta(hours=1)
        await store.park({**row, "owner": "worker", "available_at": later}, [])
        late = Batch()
        late.sent_one(message.id, "gateway")
        await store.apply(late)
        assert await _wake_at(store, message.id) is not None
    finally:
        await store.close()


async def test_a_wake_up_in_the_batch_that_deletes_its_messages_row_stays(
    db: Database,
) -> None:
    """A timer's wake-up goes with the group commit; the batch may also delete the row the
    message was sent from (this node's): the delete comes first, the wake-up stays."""
    store = await db.open_store(migrate=True)
    try:
        message = Message("nap", {}, target="type:sleeper")
        now = datetime.now(UTC)
        row = _wake_row(message, now)
        await store.apply(Batch(outbox={message.id: {**row, "owner": "worker"}}))
        later = now + timedelta(hours=1)
        batch = Batch(wakes={message.id: {**row, "available_at": later}})
        batch.sent_one(message.id, "worker")
        await store.apply(batch)
        wake = await _wake_at(store, message.id)
        assert wake is not None and wake[0] is None
        assert abs((_aware(wake[1]) - later).total_seconds()) < 0.001  # the wake-up's time
    finally:
        await store.close()


async def _task(store: Store) -> str:
    task_id = f"task-{datetime.now(UTC).timestamp()}"
    await store.create_task(task_id, "approver", {})
    return task_id


async def test_a_signal_wakes_the_parked_handler_in_its_own_transaction(
    db: Database,
) -> None:
    store = await db.open_store(migrate=True)
    try:
        task_id = await _task(store)
        message = Message("approve", {}, target="type:approver", id=task_id)
        deadline = datetime.now(UTC) + timedelta(days=1)
        wake = _wake_row(message, deadline)
        assert await store.park(wake, [(task_id, "approve", deadline)]) is False
        lease = datetime.now(UTC) + timedelta(seconds=10)
        _, stored, woken = await store.send_signal(
            task_id, "approve", {"ok": True}, "ada", owner="gateway", lease_until=lease
        )
        assert stored is True
        assert [message_id for message_id, _ in woken] == [task_id]
        assert await _wake_at(store, task_id) == ("gateway", _as_stored(db, lease))
        # A second signal of the name stores nothing and wakes nothing.
        assert (await store.send_signal(task_id, "approve", {}, "ada", owner="gateway"))[1:] == (
            False,
            [],
        )
    finally:
        await store.close()


async def test_a_signal_sent_before_the_park_makes_the_wake_up_due_at_once(
    db: Database,
) -> None:
    store = await db.open_store(migrate=True)
    try:
        task_id = await _task(store)
        await store.send_signal(task_id, "approve", {"ok": True}, "ada")
        message = Message("approve", {}, target="type:approver", id=task_id)
        deadline = datetime.now(UTC) + timedelta(days=1)
        assert await store.park(_wake_row(message, deadline), [(task_id, "approve", deadline)])
        wake = await _wake_at(store, task_id)
        assert wake is not None and _aware(wake[1]) <= datetime.now(UTC)
    finally:
        await store.close()


async def test_a_signal_sent_after_the_waits_deadline_does_not_count(db: Database) -> None:
    store = await db.open_store(migrate=True)
    try:
        task_id = await _task(store)
        deadline = datetime.now(UTC)
        await store.send_signal(task_id, "approve", {"late": True}, "ada")
        assert await store.signal(task_id, "approve", deadline) == (False, None)
        later = datetime.now(UTC) + timedelta(seconds=1)
        assert await store.signal(task_id, "approve", later) == (True, {"late": True})
    finally:
        await store.close()


def _wake_row(message: Message, available_at: datetime) -> dict[str, Any]:
    return {
        "id": message.id,
        "message": message.to_dict(),
        "owner": None,
        "available_at": available_at,
        "attempts": 0,
        "created_at": datetime.now(UTC),
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _as_stored(db: Database, value: datetime) -> datetime:
    """A timestamp as the database reads it back (SQLite keeps no offset)."""
    return value if db.backend == "postgresql" else value.replace(tzinfo=None)


async def _until(condition: Any, timeout: float = 30.0) -> None:
    from mas.testing import eventually

    await eventually(condition, timeout=timeout)
