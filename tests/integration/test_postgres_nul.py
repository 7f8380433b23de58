"""PostgreSQL cannot store NUL characters (\\u0000) in text or JSON: mas must cope.

Creating a task with one is refused up front with a message that says why; a handled
message with one must not hold back the audit of the other messages written with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents.echo import EchoAgent
from mas import Message
from mas.errors import InvalidMessage
from mas.persistence import Store, StoreJournal
from mas.testing import TestRuntime
from tests.integration.pg_support import PgSchema

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def store(pg_schema: PgSchema) -> AsyncIterator[Store]:
    opened = await Store.open(pg_schema.url, schema=pg_schema.schema, migrate=True)
    try:
        yield opened
    finally:
        await opened.close()


def runtime(store: Store) -> TestRuntime:
    """A runtime journaling into `store`, that gives up quickly at shutdown on unwritable rows."""
    journal = StoreJournal(store)
    journal.writer.close_timeout = 0.5  # the stalled-audit cases need not wait 10s to stop
    return TestRuntime(journal=journal, log_level="CRITICAL", shutdown_timeout=1.0)


async def test_creating_a_task_with_a_nul_character_is_refused_with_the_reason(
    store: Store,
) -> None:
    with pytest.raises(InvalidMessage, match="NUL"):
        await store.create_task("t-nul", "echo", {"text": "a\u0000b"})
    assert await store.get_task("t-nul") is None


async def test_a_nul_in_a_nested_payload_value_is_refused_too(store: Store) -> None:
    with pytest.raises(InvalidMessage, match="NUL"):
        await store.create_task("t-nul", "echo", {"items": [{"name": "\u0000"}]})


async def test_a_message_with_a_nul_does_not_block_the_audit_of_its_batch(
    store: Store,
) -> None:
    async with runtime(store) as rt:
        await rt.spawn(EchoAgent, id="e")
        before = Message("ping", {"text": "before"})
        poisoned = Message("ping", {"text": "a\u0000b"})
        after = Message("ping", {"text": "after"})
        for message in (before, poisoned, after):
            await rt.tell("agent:e", message)
        await rt.settle(timeout=3)
        recorded = {m.id for m in await store.agent_messages("e")}
        assert {before.id, after.id} <= recorded
        assert await store.handled_count() == 3


async def test_a_message_with_a_nul_does_not_block_task_completion_in_its_batch(
    store: Store,
) -> None:
    await store.create_task("t-1", "echo", {"text": "fine"})
    async with runtime(store) as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.tell("agent:e", Message("ping", {"text": "a\u0000b"}))
        await rt.tell("agent:e", Message("echo", {"text": "fine"}, metadata={"task_id": "t-1"}))
        await rt.settle(timeout=3)
        task = await store.get_task("t-1")
        assert task is not None and task.status == "succeeded"
