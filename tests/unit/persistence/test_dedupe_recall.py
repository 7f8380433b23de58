"""A window the dedupe budget dropped is recalled from the store: still handled once."""

from __future__ import annotations

import pytest

from mas import Agent, HandlerResult, Message
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio


class Counting(Agent):
    type = "counting"
    handled: list[str] = []  # shared by the test's agents, reset below

    async def handle_message(self, message: Message) -> HandlerResult:
        self.handled.append(message.id)
        return None


async def test_a_duplicate_after_the_budget_dropped_the_window_is_not_handled(
    db: Database,
) -> None:
    Counting.handled = []
    await (await db.open_store(migrate=True)).close()
    first = Message("job")
    async with db.runtime(dedupe_window=20, dedupe_budget=8) as rt:
        target = await rt.spawn(Counting, id="target")
        await target.tell(first)
        await rt.settle()
        others = [await rt.spawn(Counting, id=f"other{n}") for n in range(4)]
        for ref in others:  # 12 more ids: past the budget, the idle target's window goes
            for _ in range(3):
                await ref.tell(Message("job"))
            await rt.settle()
        cell = rt.local_cell("target")
        assert cell is not None and cell.remembered == 0
        await target.tell(Message("job", id=first.id))  # the same message again
        await rt.settle()
        assert cell.remembered >= 1  # recalled from the store when it ran again
        duplicates = rt.counters_for("counting").duplicates
    assert Counting.handled.count(first.id) == 1
    assert duplicates == 1
