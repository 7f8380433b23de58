"""`capability:<name>` addresses: any agent type that offers the capability, resolved when the
message is sent, from any agent or caller (not only the gateway).

Policy: an agent of this node that offers it first, else one live anywhere in the cluster
(tests/unit/persistence/test_capability_routing.py); an ask waits for a provider, backing off,
until its timeout, then fails as `no_capable_agent`; a tell, which has no deadline, is
refused at once.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest

from mas import (
    Agent,
    InvalidAddress,
    Message,
    Runtime,
    RuntimeNotRunning,
    Settings,
    UnknownCapability,
)
from mas.messages import parse_address
from mas.testing import ManualClock, TestRuntime, eventually
from tests.unit.actors.conftest import MakeRuntime

pytestmark = pytest.mark.anyio


class Researcher(Agent):
    type = "researcher"
    capabilities = ("research", "summarise")
    targets: ClassVar[list[str | None]] = []

    async def handle_message(self, message: Message) -> Message:
        type(self).targets.append(message.target)
        return message.reply({"topic": message.payload["topic"], "by": self.id})


class Clerk(Agent):
    type = "clerk"
    capabilities = ("filing",)

    async def handle_message(self, message: Message) -> None:
        raise AssertionError("a clerk does no research")


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Researcher.targets = []


async def test_an_ask_to_a_capability_reaches_an_agent_that_offers_it(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime() as runtime:
        await runtime.spawn(Clerk, id="clerk")
        await runtime.spawn(Researcher, id="r1")
        reply = await runtime.ask(
            "capability:research", Message("study", {"topic": "tides"}), timeout=5
        )
        assert reply.payload == {"topic": "tides", "by": "r1"}
        # The agent gets the message addressed to the type the capability resolved to.
        assert Researcher.targets == ["type:researcher"]


async def test_agents_reach_each_other_by_capability(make_runtime: MakeRuntime) -> None:
    class Editor(Agent):
        type = "editor"

        async def handle_message(self, message: Message) -> Message:
            draft = await self.ctx.ask(
                "capability:summarise", Message("study", {"topic": "moons"}), timeout=5
            )
            return message.reply({"draft_by": draft.payload["by"]})

    async with make_runtime() as runtime:
        await runtime.spawn(Researcher, id="r1")
        editor = await runtime.spawn(Editor, id="editor")
        reply = await editor.ask(Message("edit", {}), timeout=5)
        assert reply.payload == {"draft_by": "r1"}


async def test_a_tell_to_a_capability_nobody_offers_is_refused_at_once(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime() as runtime:
        await runtime.spawn(Clerk, id="clerk")
        with pytest.raises(UnknownCapability) as caught:
            await runtime.tell("capability:research", Message("study", {"topic": "tides"}))
        assert caught.value.capability == "research"
        assert "research" in str(caught.value)
        assert runtime.dead_letters.by_reason["no_capable_agent"] == 1


async def test_an_ask_to_a_capability_nobody_offers_fails_after_its_timeout(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime() as runtime:
        await runtime.spawn(Clerk, id="clerk")
        started = runtime.clock.time()
        with pytest.raises(UnknownCapability) as caught:
            await runtime.ask("capability:research", Message("study", {}), timeout=0.3)
        assert caught.value.capability == "research"
        # It looked until its timeout, not once.
        assert runtime.clock.time() - started >= 0.3


@pytest.mark.test_runtime_only
async def test_an_ask_waits_for_a_provider_that_starts_before_its_timeout() -> None:
    clock = ManualClock(autojump=False)
    async with TestRuntime(clock=clock) as runtime:
        asking = asyncio.create_task(
            runtime.ask("capability:research", Message("study", {"topic": "ice"}), timeout=10)
        )
        await eventually(lambda: clock.pending > 0)  # looked, found nobody, backs off
        await runtime.spawn(Researcher, id="late")
        clock.advance(5)
        reply = await asking
        assert reply.payload == {"topic": "ice", "by": "late"}


def test_a_capability_address_names_a_capability() -> None:
    assert parse_address("capability:research.deep").kind == "capability"
    with pytest.raises(InvalidAddress, match="a capability uses letters"):
        parse_address("capability:9 lives")


async def test_an_ask_waiting_for_a_provider_ends_when_the_runtime_stops() -> None:
    # The loop's clock: a test clock would jump straight to the ask's timeout.
    runtime = Runtime(Settings(log_level="WARNING"))
    async with runtime:
        asking = asyncio.create_task(
            runtime.ask("capability:research", Message("study", {}), timeout=600)
        )
        await eventually(lambda: runtime.tasks.timers > 0)  # it looked, and backs off
    with pytest.raises(RuntimeNotRunning):
        await asyncio.wait_for(asking, 30)
