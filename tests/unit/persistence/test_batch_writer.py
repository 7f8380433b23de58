"""The batch writer: group commit, flush semantics under load."""

from __future__ import annotations

import asyncio

import pytest

from mas import Message
from mas.persistence import Store, StoreJournal

pytestmark = pytest.mark.anyio


class _Node:
    """The runtime as the journal sees it; these tests record rows and send nothing."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    async def hand_over(self, message: Message, *, resent: bool = False) -> bool:
        raise AssertionError(f"nothing is sent in these tests, got {message!r}")

    def fail(self, error: BaseException) -> None:
        raise AssertionError(f"the journal failed: {error!r}")

    async def retire_agent(self, agent_id: str) -> bool:
        raise AssertionError(f"no agent is retired in these tests, got {agent_id!r}")


async def test_flush_returns_while_other_rows_keep_arriving(store: Store) -> None:
    """flush() waits for what was recorded before it, not for the writer to fall idle:
    under a steady stream of writes the writer never does."""
    journal = StoreJournal(store)
    await journal.open(_Node("node-test"))
    stop = asyncio.Event()

    async def steady_stream() -> None:
        n = 0
        while not stop.is_set():
            journal.replied(Message("noise", {"n": n}, reply_to="reply:x", trace_id="noise"))
            n += 1
            await asyncio.sleep(0)  # yield to the writer: this is load, not synchronisation

    first = Message("first", {}, trace_id="first-trace")
    journal.replied(first)
    feeder = asyncio.create_task(steady_stream())
    try:
        await asyncio.wait_for(journal.flush(), 20)
    finally:
        stop.set()
        await feeder
    # Read once the stream stopped: on SQLite, reads queue for the writer's one connection.
    assert [m.id for m in await store.trace("first-trace")] == [first.id]
    await journal.close()


async def test_concurrent_records_share_commits(store: Store) -> None:
    journal = StoreJournal(store)
    await journal.open(_Node("node-test"))
    for n in range(500):
        journal.replied(Message("bulk", {"n": n}, trace_id="bulk"))
    await journal.flush()
    assert len(await store.trace("bulk")) == 500
    assert journal.writer.batches < 500  # rows were grouped, not one transaction each
    await journal.close()
