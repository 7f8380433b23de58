"""Task lifecycle through a persisting runtime: pending -> running -> a final status.

The tasks table is what a user (or the API) reads to know whether work was done: a task
handled by an agent ends succeeded with its result and timing, a task whose handler keeps
failing ends dead-lettered with the error, and a cancelled task stays cancelled.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from agents.echo import EchoAgent
from mas import Agent, HandlerResult, Message, TaskResult
from mas.persistence import Store, StoreJournal
from mas.testing import TestRuntime, crashing
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio


def task_message(task_id: str, payload: dict[str, object], msg_type: str = "echo") -> Message:
    return Message(msg_type, payload, metadata={"task_id": task_id})


async def test_a_created_task_is_pending_until_an_agent_handles_it(store: Store) -> None:
    task, created = await store.create_task("t-1", "echo", {"text": "hi"}, target="agent:e")
    assert created
    assert task.status == "pending"
    assert not task.done
    assert (task.attempts, task.started_at, task.finished_at, task.result) == (0, None, None, None)


async def test_a_handled_task_succeeds_with_its_result_and_timing(
    db: Database, store: Store
) -> None:
    await store.create_task("t-1", "echo", {"text": "hi"}, target="agent:e")
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.tell("agent:e", task_message("t-1", {"text": "hi"}))
        await rt.settle()
        task = await store.get_task("t-1")
    assert task is not None
    assert task.status == "succeeded"
    assert task.done
    assert task.result == {"text": "hi"}
    assert task.error is None
    assert task.attempts == 1
    assert task.started_at is not None and task.finished_at is not None
    assert task.created_at <= task.started_at <= task.finished_at


async def test_tasks_handled_in_one_burst_all_succeed(store: Store) -> None:
    journal = StoreJournal(store)
    journal.writer.close_timeout = 0.5  # if the batch cannot commit, do not wait 10s to stop
    ids = [f"t-{n}" for n in range(5)]
    for task_id in ids:
        await store.create_task(task_id, "echo", {"id": task_id})
    async with TestRuntime(journal=journal, shutdown_timeout=1.0, log_level="CRITICAL") as rt:
        await rt.spawn(EchoAgent, id="e")
        for task_id in ids:  # queued back to back: handled in one drain, written in one batch
            await rt.tell("agent:e", task_message(task_id, {"id": task_id}))
        await rt.settle(timeout=3)
        tasks = [await store.get_task(task_id) for task_id in ids]
    assert [(t.id, t.status) for t in tasks if t is not None] == [(i, "succeeded") for i in ids]


async def test_a_task_message_without_a_created_task_is_recorded_as_a_task(
    db: Database, store: Store
) -> None:
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.tell("agent:e", task_message("t-adhoc", {"n": 1}))
        await rt.settle()
    task = await store.get_task("t-adhoc")
    assert task is not None
    assert (task.status, task.result, task.target) == ("succeeded", {"n": 1}, "agent:e")


async def test_a_task_whose_handler_keeps_crashing_is_dead_lettered_after_max_attempts(
    db: Database, store: Store
) -> None:
    factory, counters = crashing(1, agent_type="poisoned", on_types=("work",))
    await store.create_task("t-bad", "work", {"n": 1})
    async with db.runtime(retry={"max_attempts": 3, "base_delay": 1.0}) as rt:
        await rt.spawn(factory, id="p")
        await rt.tell("agent:p", task_message("t-bad", {"n": 1}, msg_type="work"))
        await rt.settle()
    task = await store.get_task("t-bad")
    assert counters["crashes"] == 3
    assert task is not None
    assert task.status == "dead_lettered"
    assert task.attempts == 3
    assert task.result is None
    assert task.error is not None
    assert task.error["reason"] == "max_attempts"
    assert "injected crash" in task.error["message"]
    assert task.finished_at is not None


class FailsOnceAgent(Agent):
    """Completes tasks, but raises on the first attempt of each message."""

    type = "fails_once"
    failed: ClassVar[set[str]] = set()

    async def handle_message(self, message: Message) -> HandlerResult:
        if message.id not in self.failed:
            self.failed.add(message.id)
            raise RuntimeError("first attempt fails")
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"ok": True})


async def test_a_task_that_succeeds_on_retry_records_both_attempts(
    db: Database, store: Store
) -> None:
    await store.create_task("t-flaky", "work", {})
    async with db.runtime(retry={"max_attempts": 3, "base_delay": 1.0}) as rt:
        await rt.spawn(FailsOnceAgent, id="f")
        await rt.tell("agent:f", task_message("t-flaky", {}, msg_type="work"))
        await rt.settle()
    task = await store.get_task("t-flaky")
    assert task is not None
    assert (task.status, task.result, task.attempts) == ("succeeded", {"ok": True}, 2)


async def test_creating_a_task_twice_returns_the_first_one(store: Store) -> None:
    first, created = await store.create_task("t-1", "echo", {"v": 1}, created_by="alice")
    again, created_again = await store.create_task("t-1", "other", {"v": 2}, created_by="bob")
    assert created and not created_again
    assert again == first
    assert (again.type, again.payload, again.created_by) == ("echo", {"v": 1}, "alice")
    assert len(await store.list_tasks()) == 1


async def test_cancelling_a_pending_task_cancels_it(store: Store) -> None:
    await store.create_task("t-1", "echo", {})
    task = await store.cancel_task("t-1")
    assert task is not None
    assert task.status == "cancelled"
    assert task.finished_at is not None


async def test_cancelling_an_unknown_task_returns_none(store: Store) -> None:
    assert await store.cancel_task("no-such-task") is None


async def test_cancelling_a_succeeded_task_leaves_it_succeeded(db: Database, store: Store) -> None:
    await store.create_task("t-1", "echo", {"text": "done"})
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.tell("agent:e", task_message("t-1", {"text": "done"}))
        await rt.settle()
    task = await store.cancel_task("t-1")
    assert task is not None
    assert task.status == "succeeded"
    assert task.result == {"text": "done"}


async def test_a_cancelled_task_stays_cancelled_when_its_message_is_handled_later(
    db: Database, store: Store
) -> None:
    await store.create_task("t-1", "echo", {"text": "late"})
    await store.cancel_task("t-1")
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.tell("agent:e", task_message("t-1", {"text": "late"}))
        await rt.settle()
    task = await store.get_task("t-1")
    assert task is not None
    assert task.status == "cancelled"
    assert task.result is None


async def test_list_tasks_filters_by_status_and_type(db: Database, store: Store) -> None:
    await store.create_task("t-echo", "echo", {})
    await store.create_task("t-other", "other", {})
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.tell("agent:e", task_message("t-echo", {}))
        await rt.settle()
    assert [t.id for t in await store.list_tasks(status="succeeded")] == ["t-echo"]
    assert [t.id for t in await store.list_tasks(status="pending")] == ["t-other"]
    assert [t.id for t in await store.list_tasks(task_type="other")] == ["t-other"]


async def test_a_task_read_by_id_is_the_task_the_list_shows(db: Database, store: Store) -> None:
    """`get_task` reads through the driver on SQLite: it must decode what SQLAlchemy decodes."""
    payload = {"text": "é ✓", "n": [1, 2.5, None]}
    factory, _ = crashing(1, agent_type="poisoned", on_types=("work",))
    await store.create_task("t-ok", "echo", payload, target="agent:e", created_by="me")
    await store.create_task("t-bad", "work", {})
    await store.create_task("t-new", "echo", {})
    async with db.runtime(retry={"max_attempts": 1}) as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.spawn(factory, id="p")
        await rt.tell("agent:e", task_message("t-ok", payload))
        await rt.tell("agent:p", task_message("t-bad", {}, msg_type="work"))
        await rt.settle()
    listed = {task.id: task for task in await store.list_tasks()}
    read = {task_id: await store.get_task(task_id) for task_id in listed}
    assert read == listed
    assert (listed["t-ok"].status, listed["t-ok"].result) == ("succeeded", payload)
    assert listed["t-bad"].status == "dead_lettered" and listed["t-bad"].error is not None
    assert listed["t-new"].started_at is None
    assert all(task.created_at.tzinfo is not None for task in listed.values())
    assert await store.get_task("t-missing") is None


async def test_a_task_past_its_deadline_times_out_once_with_its_descendants(
    store: Store,
) -> None:
    from datetime import UTC, datetime, timedelta

    from mas.persistence import Batch
    from mas.persistence.store import TaskRecord

    now = datetime.now(UTC)
    await store.create_task("late", "plan", {}, deadline=now - timedelta(seconds=1))
    await store.create_task("in-time", "plan", {}, deadline=now + timedelta(hours=1))
    child = TaskRecord.new("late-child", "q", {}, parent_id="late")
    grandchild = TaskRecord.new("late-grandchild", "q", {}, parent_id="late-child")
    await store.apply(Batch(created=[child.row(), grandchild.row()]))

    ended = await store.time_out_due(now)
    assert sorted(ended) == ["late", "late-child", "late-grandchild"]
    for task_id in ended:
        task = await store.get_task(task_id)
        assert task is not None and task.status == "timed_out", task
        assert task.error is not None and task.error["type"] == "DeadlineExceeded"
    in_time = await store.get_task("in-time")
    assert in_time is not None and in_time.status == "pending"
    assert await store.time_out_due(now) == []  # ended once
    assert sorted(await store.cancelled_among(["late", "in-time"])) == ["late"]
