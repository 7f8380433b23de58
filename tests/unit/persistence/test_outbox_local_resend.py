"""A message the outbox sends again (its lease ran out: the node that held it went away, or
could not reach the database) and that an agent of the sending node takes: that agent's
node checks the record first, as a node does for a message the broker redelivers, so a
message another agent handled meanwhile is skipped, not handled twice.

Seen in the chaos soak: during a database blackhole, a worker's relay claimed a gateway's
outbox rows and handed them to its own agents, which handled messages other workers had
handled but not yet recorded. SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections import Counter

import pytest

from mas import Agent, Message, Runtime
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

handled: Counter[str] = Counter()


class Tally(Agent):
    type = "tally"

    async def handle_message(self, message: Message) -> None:
        handled[self.id] += 1


@pytest.fixture
async def migrated(db: Database) -> Database:
    handled.clear()
    store = await db.open_store(migrate=True)
    await store.close()
    return db


async def test_a_message_the_outbox_sends_again_is_not_handled_twice(migrated: Database) -> None:
    message = Message("count", {}, target="type:tally")
    async with Runtime(migrated.settings(), node_id="first") as first:
        await first.spawn(Tally, id="tally-1")
        await first.hand_over(message)
        await first.settle()
    async with Runtime(migrated.settings(), node_id="second") as second:
        await second.spawn(Tally, id="tally-2")  # another agent: its own window is empty
        await second.hand_over(message, resent=True)
        await second.settle()
        assert second.duplicates == 1
    assert handled == {"tally-1": 1}


async def test_a_message_the_outbox_sends_again_is_handled_when_nobody_did(
    migrated: Database,
) -> None:
    async with Runtime(migrated.settings(), node_id="second") as second:
        await second.spawn(Tally, id="tally-2")
        await second.hand_over(Message("count", {}, target="type:tally"), resent=True)
        await second.settle()
        assert second.duplicates == 0
    assert handled == {"tally-2": 1}
