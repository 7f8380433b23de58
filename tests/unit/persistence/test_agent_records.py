"""The agents' records say where each agent sits in its node's supervision tree and how often
it was restarted: any gateway's dashboard draws every node's tree from them (SQLite and
PostgreSQL)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from mas import Agent, Message, Runtime
from mas.testing import eventually
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio


class Fragile(Agent):
    """Crashes on `crash`; counts its starts."""

    type = "fragile"
    starts: ClassVar[int] = 0

    async def start(self) -> None:
        type(self).starts += 1

    async def handle_message(self, message: Message) -> None:
        if message.type == "crash":
            raise RuntimeError("crash (test)")


async def test_a_restart_is_recorded_with_the_agents_place_in_the_tree(db: Database) -> None:
    store = await db.open_store(migrate=True)
    try:
        settings = db.settings(heartbeat_interval=0.2, shutdown_timeout=2)
        async with Runtime(settings, node_id="n1") as runtime:
            team = await runtime.spawn_supervisor("team", strategy="one_for_all")
            first = await team.spawn(Fragile, id="first", max_attempts=1)
            await team.spawn(Fragile, id="second")
            await runtime.spawn(Fragile, id="alone")
            Fragile.starts = 0
            await first.tell(Message("crash", {}))
            await eventually(lambda: Fragile.starts == 2, timeout=30)  # both restarted
            journal = runtime.journal
            assert journal is not None
            await journal.flush()
            records = {a.id: a for a in await store.list_agents(limit=10)}
        assert {
            a: (r.metadata["supervisor"], r.metadata["restarts"]) for a, r in records.items()
        } == {
            "first": ("root/team", 1),
            "second": ("root/team", 1),
            "alone": ("root", 0),
        }
        assert records["first"].metadata["capabilities"] == []
    finally:
        await store.close()
