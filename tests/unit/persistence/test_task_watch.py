"""Tasks created through the journal's batch, and ends announced by the commit recording them.

The gateway creates a task under a fresh id in the same group commit as the agent's records
and answers `?wait` from the commit itself: what it answers must be what the store holds,
and nothing may be announced before it is committed.
"""

from __future__ import annotations

import asyncio

import pytest

from agents.echo import EchoAgent
from mas import Message
from mas.persistence import Store, StoreJournal, TaskRecord
from mas.testing import TestRuntime, crashing

pytestmark = pytest.mark.anyio


def task_for(task_id: str, payload: dict[str, object], msg_type: str = "echo") -> Message:
    return Message(msg_type, payload, id=task_id, metadata={"task_id": task_id})


async def test_a_task_created_and_ended_in_one_batch_is_stored_whole(store: Store) -> None:
    journal = StoreJournal(store)
    async with TestRuntime(journal=journal, log_level="CRITICAL") as rt:
        await rt.spawn(EchoAgent, id="e")
        task = TaskRecord.new("t-1", "echo", {"n": 1}, target="agent:e", created_by="alice")
        ended = journal.watch_task(task.id)
        journal.task_created(task)
        await rt.tell("agent:e", task_for(task.id, {"n": 1}))  # before the creation commits
        await rt.settle()
        end = await asyncio.wait_for(ended, 5)
    stored = await store.get_task("t-1")
    assert stored is not None
    assert (stored.status, stored.result, stored.created_by) == ("succeeded", {"n": 1}, "alice")
    assert end.applied_to(task) == stored  # the announced task is the stored one, field by field


async def test_the_end_is_announced_only_once_committed(store: Store) -> None:
    journal = StoreJournal(store)
    async with TestRuntime(journal=journal, log_level="CRITICAL") as rt:
        await rt.spawn(EchoAgent, id="e")
        ended = journal.watch_task("t-2")
        journal.task_created(TaskRecord.new("t-2", "echo", {}, target="agent:e"))
        committed_before: list[int] = []
        ended.add_done_callback(lambda _: committed_before.append(journal.writer.batches))
        await rt.tell("agent:e", task_for("t-2", {}))
        await asyncio.wait_for(ended, 5)
        assert committed_before and committed_before[0] >= 1
        stored = await store.get_task("t-2")
        assert stored is not None and stored.status == "succeeded"  # readable when announced


async def test_a_dead_lettered_task_is_announced_with_its_error(store: Store) -> None:
    journal = StoreJournal(store)
    factory, _ = crashing(5, agent_type="poisoned", on_types=("work",))
    async with TestRuntime(
        journal=journal, log_level="CRITICAL", retry={"max_attempts": 2, "base_delay": 0.0}
    ) as rt:
        await rt.spawn(factory, id="p")
        task = TaskRecord.new("t-3", "work", {}, target="agent:p")
        ended = journal.watch_task(task.id)
        journal.task_created(task)
        await rt.tell("agent:p", task_for(task.id, {}, msg_type="work"))
        await rt.settle()
        end = await asyncio.wait_for(ended, 5)
    assert (end.status, end.attempts) == ("dead_lettered", 2)
    assert end.applied_to(task) == await store.get_task("t-3")


async def test_a_cancel_wakes_the_watchers_and_unwatching_forgets_them(store: Store) -> None:
    journal = StoreJournal(store)
    async with TestRuntime(journal=journal, log_level="CRITICAL"):
        journal.task_created(TaskRecord.new("t-4", "echo", {}))
        await journal.flush()
        first, second = journal.watch_task("t-4"), journal.watch_task("t-4")
        journal.unwatch_task("t-4", second)
        cancelled = await store.cancel_task("t-4")
        assert cancelled is not None
        journal.task_cancelled(cancelled)
        assert first.done() and first.result().status == "cancelled"
        assert not second.done()  # unwatched: nobody is told, nothing is kept
        assert not journal._watches


async def test_status_listeners_hear_each_change_once_committed(store: Store) -> None:
    # The gateway's event streams are pushed from here instead of polling the store.
    journal = StoreJournal(store)
    heard: list[tuple[str, str]] = []
    journal.status_listeners.append(lambda task_id, status: heard.append((task_id, status)))
    async with TestRuntime(journal=journal, log_level="CRITICAL") as rt:
        await rt.spawn(EchoAgent, id="e")
        journal.task_created(TaskRecord.new("t-9", "echo", {}, target="agent:e"))
        await rt.tell("agent:e", task_for("t-9", {}))
        await rt.settle()
    assert heard == [("t-9", "running"), ("t-9", "succeeded")]


async def test_task_statuses_reads_many_tasks_at_once(store: Store) -> None:
    ids = [f"s-{n}" for n in range(510)]  # more than one chunk of ids
    for task_id in ids:
        await store.create_task(task_id, "echo", {}, target="agent:e")
    await store.cancel_task("s-7")
    statuses = await store.task_statuses([*ids, "unknown"])
    assert len(statuses) == 510  # an unknown id is simply absent
    assert statuses["s-7"] == "cancelled"
    assert statuses["s-8"] == statuses["s-509"] != "cancelled"
