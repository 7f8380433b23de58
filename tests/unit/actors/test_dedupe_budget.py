"""The dedupe budget: the message ids all agents of a process remember stay bounded.

One agent remembers at most `MAS_DEDUPE_WINDOW` ids; a process hosting many agents at most
`MAS_DEDUPE_BUDGET` in all: past it, idle agents' windows are dropped, oldest first.
(tests/unit/persistence/test_dedupe_recall.py: a dropped window is recalled from the store.)
"""

from __future__ import annotations

import pytest

from mas import Agent, HandlerResult, Message, Runtime, Settings

pytestmark = pytest.mark.anyio


class Quiet(Agent):
    type = "quiet"

    async def handle_message(self, message: Message) -> HandlerResult:
        return None


async def remembered(rt: Runtime, agents: int) -> list[int]:
    cells = [rt.local_cell(f"q{n}") for n in range(agents)]
    return [cell.remembered for cell in cells if cell is not None]


async def test_many_agents_remember_no_more_ids_than_the_budget() -> None:
    agents, each, budget = 1_000, 100, 10_000  # 100,000 ids without the budget
    settings = Settings(dedupe_window=200, dedupe_budget=budget, log_level="WARNING")
    async with Runtime(settings) as rt:
        refs = [await rt.spawn(Quiet, id=f"q{n}") for n in range(agents)]
        for _ in range(each):
            for ref in refs:
                await ref.tell(Message("work"))
            await rt.settle()
        held = await remembered(rt, agents)
        assert sum(held) == rt.dedupe.count  # the count is what the windows hold
        assert rt.dedupe.count <= budget
        assert rt.dedupe.count > budget // 2  # it trims a quarter, not everything
        assert max(held) <= 200  # the window of one agent still bounds it
    assert rt.dedupe.count == 0  # stopped agents gave theirs back


async def test_without_pressure_every_agent_keeps_its_window() -> None:
    settings = Settings(dedupe_window=200, dedupe_budget=1_000_000, log_level="WARNING")
    async with Runtime(settings) as rt:
        refs = [await rt.spawn(Quiet, id=f"q{n}") for n in range(50)]
        for ref in refs:
            for _ in range(30):
                await ref.tell(Message("work"))
        await rt.settle()
        assert await remembered(rt, 50) == [30] * 50
        assert rt.dedupe.count == 1_500
