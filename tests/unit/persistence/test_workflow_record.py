"""Durable steps across processes: a node stops in the middle of a handler's steps, another
node (a new runtime on the same database, as after a crash) gets the same message again from
the outbox, reads the finished steps from the record and does only the rest.

SQLite and PostgreSQL. The in-process rules (retries, divergence, JSON) are in
tests/unit/actors/test_workflow_steps.py.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import ClassVar

import pytest
from sqlalchemy import select

from mas import Agent, Message, Runtime
from mas.persistence.models import workflow_steps
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

effects: Counter[str] = Counter()
"""Side effects outside mas (a table the steps would increment)."""


class Researcher(Agent):
    type = "researcher"

    async def handle_message(self, message: Message) -> Message:
        effects["research"] += 1
        return message.reply({"draft": "findings"})


def count(name: str) -> str:
    effects[name] += 1
    return name


class Pipeline(Agent):
    """Step one, ask a researcher, step three; the first node stops before step three."""

    type = "pipeline"
    reached: ClassVar[asyncio.Event]
    finished: ClassVar[asyncio.Event]
    result: ClassVar[list[str]] = []
    hold: ClassVar[asyncio.Event | None] = None

    async def handle_message(self, message: Message) -> None:
        ctx = self.ctx
        one = await ctx.step("one", count, "one")
        draft = await ctx.ask("agent:researcher", Message("research", {}), timeout=10)
        if self.hold is not None:
            type(self).reached.set()
            await self.hold.wait()  # never set: this node stops in the middle
        three = await ctx.step("three", count, "three")
        type(self).result = [one, draft.payload["draft"], three]
        type(self).finished.set()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    effects.clear()


@pytest.fixture
async def migrated(db: Database) -> Database:
    store = await db.open_store(migrate=True)
    await store.close()
    return db


async def test_another_node_finishes_the_steps_a_stopped_node_began(migrated: Database) -> None:
    db = migrated
    request = Message("run", {})
    Pipeline.reached, Pipeline.hold = asyncio.Event(), asyncio.Event()
    Pipeline.finished = asyncio.Event()
    first = Runtime(db.settings(shutdown_timeout=0.2), node_id="first")
    async with first:
        await first.spawn(Researcher, id="researcher")
        await first.spawn(Pipeline, id="pipeline")
        await first.tell("agent:pipeline", request.evolve(target="agent:pipeline"))
        await asyncio.wait_for(Pipeline.reached.wait(), 30)
    assert effects == {"one": 1, "research": 1}  # and then the node stopped

    Pipeline.hold = None
    async with Runtime(db.settings(), node_id="second") as second:
        await second.spawn(Researcher, id="researcher")
        await second.spawn(Pipeline, id="pipeline")
        # What the outbox relay does with a message whose node went away mid-handling.
        await second.hand_over(request.evolve(target="agent:pipeline"), resent=True)
        await asyncio.wait_for(Pipeline.finished.wait(), 30)
        journal = second.journal
        assert journal is not None
        await journal.flush()
        store = journal.store  # type: ignore[attr-defined]
        async with store.reading() as conn:
            rows = (
                await conn.execute(
                    select(workflow_steps.c.seq, workflow_steps.c.name, workflow_steps.c.kind)
                    .where(workflow_steps.c.message_id == request.id)
                    .order_by(workflow_steps.c.seq)
                )
            ).all()

    assert Pipeline.result == ["one", "findings", "three"]
    assert effects == {"one": 1, "research": 1, "three": 1}  # nothing finished ran twice
    assert [tuple(row) for row in rows] == [
        (0, "one", "step"),
        (1, "agent:researcher", "ask"),
        (2, "three", "step"),
    ]
