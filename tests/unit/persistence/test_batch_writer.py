"""The batch writer: group commit, flush semantics under load."""

from __future__ import annotations

import asyncio

import pytest

from mas import Message, StoreUnavailable
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


class _Bug(Exception):
    """Not an outage: a bug in writing a batch, which no retry can fix."""


class _FailingNode(_Node):
    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.failures: list[BaseException] = []

    def fail(self, error: BaseException) -> None:
        self.failures.append(error)


async def test_a_crashed_writer_fails_flush_at_once_and_fails_the_runtime(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def apply(batch: object) -> None:
        raise _Bug("a bug while writing the batch")

    monkeypatch.setattr(store, "apply", apply)
    journal = StoreJournal(store)
    journal.writer.close_timeout = 0.5  # nothing can commit: do not wait long to stop
    node = _FailingNode("node-test")
    await journal.open(node)
    journal.replied(Message("lost", {}, trace_id="lost"))
    # Far under the time a flush would otherwise wait (for ever here; the API's timeout).
    with pytest.raises(StoreUnavailable) as caught:
        await asyncio.wait_for(journal.flush(), 5)
    assert isinstance(caught.value.__cause__, _Bug)
    assert [type(error) for error in node.failures] == [_Bug]
    await journal.close()  # the crash was reported: close does not raise it again
