"""Spawners (`POST /agents/` on a worker): every outcome is an answer, never a crash."""

from __future__ import annotations

import pytest

from agents.echo import EchoAgent
from mas import Agent, HandlerResult, Message
from mas.orchestrator.spawner import SPAWN, spawner_for, spawner_type
from mas.testing import TestRuntime

pytestmark = pytest.mark.anyio


class WontStart(Agent):
    type = "wont_start"

    async def start(self) -> None:
        raise RuntimeError("no licence for this agent")

    async def handle_message(self, message: Message) -> HandlerResult:
        return None


async def ask_spawn(rt: TestRuntime, agent_type: str, agent_id: object) -> dict[str, object]:
    reply = await rt.ask(
        f"type:{spawner_type(agent_type)}", Message(SPAWN, {"id": agent_id}), timeout=5
    )
    return dict(reply.payload)


async def test_a_spawner_starts_the_agent_and_says_where() -> None:
    async with TestRuntime(node_id="w1") as rt:
        await rt.spawn(spawner_for(EchoAgent))
        assert await ask_spawn(rt, "echo", "e1") == {"id": "e1", "node_id": "w1"}
        assert rt.local_cell("e1") is not None
        assert (await ask_spawn(rt, "echo", "e1"))["error"] == "duplicate"
        assert (await ask_spawn(rt, "echo", 7))["error"] == "invalid"


async def test_an_agent_that_fails_to_start_is_an_answer_not_a_spawner_crash() -> None:
    async with TestRuntime() as rt:
        await rt.spawn(spawner_for(WontStart))
        for n in range(3):
            answer = await ask_spawn(rt, "wont_start", f"w{n}")
            assert answer["error"] == "start_failed"
            assert "no licence" in str(answer["detail"])
        assert rt.dead_letters.count == 0  # handled every time, never retried or dead-lettered
        assert rt.local_cell("w0") is None
