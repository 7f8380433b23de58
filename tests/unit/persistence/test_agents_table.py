"""The agents table: which agents a node runs, of what type, and whether they still run."""

from __future__ import annotations

import pytest

from agents.echo import EchoAgent
from mas import Agent, HandlerResult, Message
from mas.persistence import Store
from mas.testing import Probe, eventually
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio


async def test_spawned_agents_are_running_with_their_type_and_node(
    db: Database, store: Store
) -> None:
    async with db.runtime(node_id="node-a") as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.spawn(Probe().agent("probe"), id="p")
        await rt.settle()
        echo = await store.get_agent("e")
        probe = await store.get_agent("p")
        running = await store.list_agents(status="running")
    assert echo is not None and probe is not None
    assert (echo.type, echo.status, echo.node_id) == ("echo", "running", "node-a")
    assert echo.metadata.get("capabilities") == ["echo"]
    assert (probe.type, probe.status) == ("probe", "running")
    assert {a.id for a in running} == {"e", "p"}


async def test_agents_are_stopped_after_shutdown(db: Database, store: Store) -> None:
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.spawn(EchoAgent, id="f")
    agents = await store.list_agents(agent_type="echo")
    assert {(a.id, a.status) for a in agents} == {("e", "stopped"), ("f", "stopped")}
    assert await store.list_agents(status="running") == []


async def test_an_agent_stopped_while_the_runtime_runs_is_stopped_in_the_table(
    db: Database, store: Store
) -> None:
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.spawn(EchoAgent, id="stays")
        await rt.stop_agent("e")
        await rt.settle()
        stopped = await store.get_agent("e")
        stays = await store.get_agent("stays")
    assert stopped is not None and stopped.status == "stopped"
    assert stays is not None and stays.status == "running"


async def test_a_respawned_agent_is_running_again(db: Database, store: Store) -> None:
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
    async with db.runtime() as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.settle()
        agent = await store.get_agent("e")
    assert agent is not None and agent.status == "running"


async def test_a_running_node_keeps_its_agents_heartbeat_fresh(db: Database, store: Store) -> None:
    async with db.runtime(node_id="node-h", heartbeat_interval=0.05) as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.settle()
        first = await store.get_agent("e")
        assert first is not None and first.last_heartbeat is not None

        # The heartbeat runs on the loop's clock: wait for it to move the timestamp on.
        async def moved_on() -> bool:
            latest = await store.get_agent("e")
            assert latest is not None and latest.last_heartbeat is not None
            assert first.last_heartbeat is not None
            return latest.last_heartbeat > first.last_heartbeat

        await eventually(moved_on, timeout=10)
    stopped = await store.get_agent("e")
    assert stopped is not None and stopped.status == "stopped"


def test_an_agent_is_live_only_while_running_with_a_fresh_heartbeat() -> None:
    from datetime import UTC, datetime, timedelta

    from mas.api.schemas import AgentOut
    from mas.persistence.store import AgentRecord

    now = datetime.now(UTC)

    def record(status: str, beat: datetime | None) -> AgentRecord:
        return AgentRecord(
            id="a",
            type="echo",
            status=status,
            node_id="n",
            last_heartbeat=beat,
            metadata={},
            created_at=now,
        )

    assert AgentOut.of(record("running", now), stale_after=15).live
    assert not AgentOut.of(record("running", now - timedelta(seconds=16)), stale_after=15).live
    assert not AgentOut.of(record("stopped", now), stale_after=15).live
    assert not AgentOut.of(record("running", None), stale_after=15).live


class Translator(Agent):
    type = "translator"
    capabilities = ("translate", "summarize")

    async def handle_message(self, message: Message) -> HandlerResult:
        return None


async def test_live_capabilities_lists_each_running_type_once_with_what_it_offers(
    db: Database, store: Store
) -> None:
    """What the gateway routes `capability:` by, whichever node runs the agents."""
    async with db.runtime(node_id="node-c") as rt:
        for n in range(3):
            await rt.spawn(EchoAgent, id=f"echo-{n}")
        await rt.spawn(Translator, id="t-1")
        gone = await rt.spawn(Probe().agent("probe"), id="p")
        await gone.stop()
        await rt.settle()
        live = await store.live_capabilities(stale_after=60)
        # A heartbeat older than the limit is not live: with no slack, nothing is.
        stale = await store.live_capabilities(stale_after=0)
    assert live == {"echo": ("echo",), "translator": ("translate", "summarize")}
    assert stale == {}
