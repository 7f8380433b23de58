"""Idempotency across restarts: a message id an agent handled is not handled again.

The processed ids (and the reply given) are kept in the database, so a runtime started
later on the same database — a restarted process — skips a redelivered message and
answers a repeated ask with the reply it gave the first time.
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from mas import Agent, HandlerResult, Message
from mas.persistence import Store
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

handler_calls = 0


class CountingAgent(Agent):
    """Replies with how many times any CountingAgent handler ran (across runtimes)."""

    type = "counting"
    seen: ClassVar[list[str]] = []

    async def handle_message(self, message: Message) -> HandlerResult:
        global handler_calls
        handler_calls += 1
        self.seen.append(message.id)
        return message.reply({"call": handler_calls})


@pytest.fixture(autouse=True)
def reset_counter() -> None:
    global handler_calls
    handler_calls = 0
    CountingAgent.seen.clear()


@pytest.mark.parametrize("audit", ["all", "tasks", "off"])
async def test_a_redelivered_tell_is_not_handled_again_after_a_restart(
    db: Database, store: Store, audit: str
) -> None:
    # audit=all remembers through messages.handled_by, the others through processed_messages
    async with db.runtime(audit=audit) as rt:
        await rt.spawn(CountingAgent, id="c")
        await rt.tell("agent:c", Message("job", {}, id="msg-x"))
        await rt.settle()
    assert handler_calls == 1
    async with db.runtime(audit=audit) as rt:
        await rt.spawn(CountingAgent, id="c")
        await rt.tell("agent:c", Message("job", {}, id="msg-x"))
        await rt.tell("agent:c", Message("job", {}, id="msg-y"))
        await rt.settle()
        assert rt.duplicates == 1
    assert CountingAgent.seen == ["msg-x", "msg-y"]


async def test_another_agent_id_may_handle_the_same_message_id(db: Database, store: Store) -> None:
    async with db.runtime() as rt:
        await rt.spawn(CountingAgent, id="c1")
        await rt.tell("agent:c1", Message("job", {}, id="msg-x"))
        await rt.settle()
    async with db.runtime() as rt:
        await rt.spawn(CountingAgent, id="c2")
        await rt.tell("agent:c2", Message("job", {}, id="msg-x"))
        await rt.settle()
    assert handler_calls == 2


async def test_a_repeated_ask_gets_the_stored_reply_after_a_restart_on_the_same_node(
    db: Database, store: Store
) -> None:
    async with db.runtime(node_id="node-a") as rt:
        await rt.spawn(CountingAgent, id="c")
        first = await rt.ask("agent:c", Message("q", {}, id="ask-x"), timeout=5)
    async with db.runtime(node_id="node-a") as rt:
        await rt.spawn(CountingAgent, id="c")
        again = await rt.ask("agent:c", Message("q", {}, id="ask-x"), timeout=5)
    assert handler_calls == 1
    assert again.payload == first.payload == {"call": 1}


async def test_a_repeated_ask_gets_the_stored_reply_after_a_restart(
    db: Database, store: Store
) -> None:
    async with db.runtime() as rt:  # a new node id per process, as in production
        await rt.spawn(CountingAgent, id="c")
        first = await rt.ask("agent:c", Message("q", {}, id="ask-x"), timeout=5)
    async with db.runtime() as rt:
        await rt.spawn(CountingAgent, id="c")
        again = await rt.ask("agent:c", Message("q", {}, id="ask-x"), timeout=1)
    assert handler_calls == 1
    assert again.payload == first.payload == {"call": 1}
