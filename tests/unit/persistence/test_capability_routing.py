"""`capability:` addresses across nodes: an agent on one node reaches, by capability, an agent
that runs only on another, found in the agents' records (heartbeats) in the shared database.

Two runtimes on one in-memory broker recording into one database, as `mas worker`s do over
RabbitMQ; the database is SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from mas import Agent, Message, Runtime, UnknownCapability
from mas.actors.journal import StartedAgent
from mas.transports.memory import MemoryBroker, MemoryTransport
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio


class Translator(Agent):
    type = "translator"
    capabilities = ("translate",)

    async def handle_message(self, message: Message) -> Message:
        return message.reply({"text": message.payload["text"].upper(), "by": self.id})


class Writer(Agent):
    """Runs where no translator does: asks for one by capability."""

    type = "writer"

    async def handle_message(self, message: Message) -> Message:
        translated = await self.ctx.ask(
            "capability:translate", Message("translate", message.payload), timeout=10
        )
        return message.reply(translated.payload)


class Nodes:
    def __init__(self, db: Database, stack: AsyncExitStack) -> None:
        self.db = db
        self.stack = stack
        self.broker = MemoryBroker(serialize=True)

    async def start(self, node_id: str) -> Runtime:
        settings = self.db.settings(heartbeat_interval=0.2, shutdown_timeout=2)
        return await self.stack.enter_async_context(
            Runtime(settings, transport=MemoryTransport(self.broker), node_id=node_id)
        )


@pytest.fixture
async def nodes(db: Database) -> AsyncIterator[Nodes]:
    store = await db.open_store(migrate=True)
    await store.close()
    async with AsyncExitStack() as stack:
        yield Nodes(db, stack)


async def test_an_agent_reaches_by_capability_an_agent_on_another_node(nodes: Nodes) -> None:
    translating = await nodes.start("translating")
    await translating.spawn(Translator, id="translator")
    writing = await nodes.start("writing")
    writer = await writing.spawn(Writer, id="writer")
    reply = await writer.ask(Message("write", {"text": "bonjour"}), timeout=15)
    assert reply.payload == {"text": "BONJOUR", "by": "translator"}  # it runs only there


async def test_a_capability_offered_by_no_live_node_fails_as_no_capable_agent(
    nodes: Nodes,
) -> None:
    translating = await nodes.start("translating")
    translator = await translating.spawn(Translator, id="translator")
    writing = await nodes.start("writing")
    await translator.stop()
    await translating.journal.flush()  # type: ignore[union-attr]
    with pytest.raises(UnknownCapability):
        await writing.ask("capability:translate", Message("translate", {"text": "x"}), timeout=1)


async def test_a_provider_recorded_before_its_queue_is_bound_is_a_capability_not_yet_there(
    nodes: Nodes,
) -> None:
    """A worker records its agents before its queues exist (it is starting): a send by
    capability then finds the type but no queue. That is a capability not yet served, which a
    task with a deadline waits for, not an unknown address that fails it at once."""
    writing = await nodes.start("writing")
    journal = writing.journal
    assert journal is not None
    journal.agent_started(StartedAgent("translator-9", "translator", ("translate",)))  # no queue
    await journal.flush()
    with pytest.raises(UnknownCapability) as refused:
        await writing.tell("capability:translate", Message("translate", {"text": "x"}))
    assert "type:translator" in str(refused.value.__cause__)
