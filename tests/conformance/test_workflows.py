"""Durable workflows across nodes, the same on every transport: capability routing to agents
on other nodes, fan-out/fan-in, long asks, timers and signals that park the handler,
cancellation and deadlines that reach a handler on another node, retries that do not redo
a finished step.

A gateway node (the HTTP app, no agents) and worker nodes share the transport (the memory
broker, or a per-test prefix on the real RabbitMQ) and one database (a SQLite file: the
store is not what is under test here), as `mas api` and `mas worker` processes do.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import SecretStr

from mas import Agent, HandlerResult, Message, Runtime, TaskResult
from mas.api.app import create_app
from mas.api.auth import SCOPES, mint_token
from mas.config import AuthSettings, OutboxSettings, RetrySettings, Settings, WorkflowSettings
from mas.errors import UnknownCapability
from mas.persistence import Store
from mas.testing import eventually
from mas.transports.base import Transport
from mas.transports.memory import MemoryBroker, MemoryTransport
from tests.amqp_support import AmqpScope

pytestmark = pytest.mark.anyio

SECRET = "w" * 40
HEADERS = {"Authorization": f"Bearer {mint_token(SECRET, 'tester', sorted(SCOPES), ttl=86_400)}"}

effects: Counter[str] = Counter()


def count(name: str) -> str:
    effects[name] += 1
    return name


class Researcher(Agent):
    """Offers `research`: answers a topic (once `release` is set, when a test holds it)."""

    type = "researcher"
    capabilities = ("research",)
    release: ClassVar[asyncio.Event | None] = None

    async def handle_message(self, message: Message) -> HandlerResult:
        effects[f"research {message.payload['topic']}"] += 1
        if type(self).release is not None:
            await type(self).release.wait()
        return message.reply({"draft": f"notes on {message.payload['topic']}"})


class Report(Agent):
    """Splits a goal into topics (a step), asks `capability:research` for each at once,
    merges the drafts (a step that fails `flaky` times first); completes the task."""

    type = "report"
    flaky: ClassVar[int] = 0

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        topics = await ctx.step("split", _split, message.payload["goal"])
        drafts = await ctx.gather(
            *[
                ctx.ask("capability:research", Message("research", {"topic": t}), timeout=120)
                for t in topics
            ]
        )
        merged = await ctx.step("merge", _merge, [d.payload["draft"] for d in drafts])
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"report": merged})


def _split(goal: str) -> list[str]:
    effects["split"] += 1
    return goal.split(", ")


def _merge(drafts: list[str]) -> str:
    effects["merge"] += 1
    if effects["merge"] <= Report.flaky:
        raise RuntimeError("the merge failed (test)")
    return "; ".join(drafts)


class Waiter(Agent):
    """A step, a durable sleep, the task's signal "approve", a step; completes the task."""

    type = "waiter"

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        await ctx.step("before", count, "before")
        await ctx.sleep(float(message.payload.get("sleep", 0)))
        decision = None
        if "signal_timeout" in message.payload:
            decision = await ctx.signal("approve", timeout=message.payload["signal_timeout"])
        await ctx.step("after", count, "after")
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"decision": decision})


class Stuck(Agent):
    """Waits for ever; counts how its handler ended."""

    type = "stuck"

    async def handle_message(self, message: Message) -> HandlerResult:
        effects["started"] += 1
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            effects["cancelled"] += 1
            raise
        return None


class Nodes:
    """A gateway (HTTP app, no agents) and workers on one transport fabric and database."""

    def __init__(
        self, stack: AsyncExitStack, make: Callable[[], Transport], database_url: str
    ) -> None:
        self.stack = stack
        self.make = make
        self.database_url = database_url
        self.client: httpx.AsyncClient
        self.park_after = 0.2

    def settings(self) -> Settings:
        return Settings(
            database_url=self.database_url,
            persist=True,
            log_level="WARNING",
            auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
            outbox=OutboxSettings(lease=2.0, sweep_interval=0.05),
            workflow=WorkflowSettings(park_after=self.park_after),
            retry=RetrySettings(max_attempts=4, base_delay=0.05, max_delay=0.2),
            heartbeat_interval=0.2,
            shutdown_timeout=2,
        )

    async def node(self, node_id: str, *agents: type[Agent]) -> Runtime:
        runtime = await self.stack.enter_async_context(
            Runtime(self.settings(), transport=self.make(), node_id=node_id)
        )
        for i, agent in enumerate(agents):
            await runtime.spawn(agent, id=f"{agent.type}-{node_id}-{i}")
        journal = runtime.journal
        assert journal is not None
        await journal.flush()  # its agents' records are there for the other nodes' routing
        return runtime

    async def gateway(self) -> Runtime:
        runtime = await self.node("gateway")
        app = create_app(self.settings(), runtime=runtime)
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.client = await self.stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        return runtime

    async def submit(self, agent_type: str, payload: dict[str, Any], **spec: Any) -> str:
        body = {"type": agent_type, "payload": payload, **spec}
        created = await self.client.post("/tasks/", json=body, headers=HEADERS)
        assert created.status_code == 202, created.text
        return str(created.json()["id"])

    async def task(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        got = await self.client.get(f"/tasks/{task_id}", params={"wait": wait}, headers=HEADERS)
        assert got.status_code == 200, got.text
        body: dict[str, Any] = got.json()
        return body

    async def ended(self, task_id: str) -> dict[str, Any]:
        async def done() -> bool:
            return (await self.task(task_id))["status"] not in ("pending", "running")

        await eventually(done, timeout=60, interval=0.05)
        return await self.task(task_id)


@pytest.fixture
def make_transport(transport_kind: str, request: pytest.FixtureRequest) -> Callable[[], Transport]:
    if transport_kind == "rabbitmq":
        scope: AmqpScope = request.getfixturevalue("amqp_scope")
        return scope.transport
    broker = MemoryBroker(serialize=True)
    return lambda: MemoryTransport(broker)


@pytest.fixture
async def nodes(make_transport: Callable[[], Transport], tmp_path: Path) -> AsyncIterator[Nodes]:
    effects.clear()
    Researcher.release = None
    Report.flaky = 0
    url = f"sqlite+aiosqlite:///{tmp_path / 'mas.db'}"
    store = await Store.open(url, migrate=True)
    await store.close()
    async with AsyncExitStack() as stack:
        yield Nodes(stack, make_transport, url)


async def test_a_workflow_fans_out_to_capable_agents_on_another_node_and_fans_in(
    nodes: Nodes,
) -> None:
    await nodes.node("researchers", Researcher, Researcher, Researcher)
    await nodes.node("reports", Report)
    await nodes.gateway()
    task_id = await nodes.submit("report", {"goal": "tides, moons, orbits, comets"})
    done = await nodes.ended(task_id)
    assert done["status"] == "succeeded", done
    assert done["result"] == {
        "report": "notes on tides; notes on moons; notes on orbits; notes on comets"
    }
    assert effects == {
        "split": 1,
        "merge": 1,
        **{f"research {t}": 1 for t in ("tides", "moons", "orbits", "comets")},
    }
    tree = await nodes.client.get(f"/tasks/{task_id}/tree", headers=HEADERS)
    children = tree.json()["children"]
    assert [c["status"] for c in children] == ["succeeded"] * 4


async def test_long_asks_park_and_their_answers_wake_the_workflow(nodes: Nodes) -> None:
    Researcher.release = asyncio.Event()
    await nodes.node("researchers", Researcher, Researcher)
    reports = await nodes.node("reports", Report)
    await nodes.gateway()
    task_id = await nodes.submit("report", {"goal": "tides, moons"})
    await eventually(lambda: reports.stats()["parked"] >= 1, timeout=60)
    Researcher.release.set()
    done = await nodes.ended(task_id)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"report": "notes on tides; notes on moons"}
    assert effects == {"split": 1, "merge": 1, "research tides": 1, "research moons": 1}


async def test_a_long_ask_still_asks_when_finding_its_provider_outlasts_park_after(
    nodes: Nodes,
) -> None:
    # The handler parks only once its question is sent: were the wait for a provider cut
    # short at `park_after`, the question would never be asked and nothing would wake it.
    nodes.park_after = 0.01
    reports = await nodes.node("reports", Report)
    await nodes.gateway()
    task_id = await nodes.submit("report", {"goal": "tides"})
    await eventually(lambda: effects["split"] == 1, timeout=60)
    Researcher.release = asyncio.Event()
    await nodes.node("researchers", Researcher)  # offered after the handler began to ask
    await eventually(lambda: reports.stats()["parked"] >= 1, timeout=60)
    Researcher.release.set()
    done = await nodes.ended(task_id)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"report": "notes on tides"}
    assert effects == {"split": 1, "merge": 1, "research tides": 1}


async def test_a_failing_step_is_retried_with_backoff_without_redoing_finished_ones(
    nodes: Nodes,
) -> None:
    Report.flaky = 2
    await nodes.node("researchers", Researcher)
    await nodes.node("reports", Report)
    await nodes.gateway()
    task_id = await nodes.submit("report", {"goal": "tides, moons"})
    done = await nodes.ended(task_id)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 3
    # The split and the questions were recorded: only the failing merge ran again.
    assert effects == {"split": 1, "merge": 3, "research tides": 1, "research moons": 1}


async def test_a_capability_nobody_offers_fails_the_task_at_its_deadline_naming_it(
    nodes: Nodes,
) -> None:
    await nodes.node("workers", Waiter)
    await nodes.gateway()
    body = {"capability": "translation", "payload": {}, "deadline": 1.0}
    created = await nodes.client.post("/tasks/", json=body, headers=HEADERS)
    assert created.status_code == 202, created.text
    done = await nodes.ended(created.json()["id"])
    assert done["status"] == "failed", done
    assert done["error"]["type"] == UnknownCapability.__name__
    assert "translation" in done["error"]["message"]


async def test_a_capability_offered_later_gets_the_task_before_its_deadline(
    nodes: Nodes,
) -> None:
    await nodes.gateway()
    body = {"capability": "research", "payload": {"topic": "tides"}, "deadline": 60}
    created = await nodes.client.post("/tasks/", json=body, headers=HEADERS)
    assert created.status_code == 202, created.text
    await nodes.node("researchers", Researcher)  # started after the task was accepted
    done = await nodes.ended(created.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["result"] == {"draft": "notes on tides"}


async def test_a_parked_timer_and_a_signal_wake_the_workflow_on_any_node(
    nodes: Nodes,
) -> None:
    await nodes.node("first", Waiter)
    await nodes.node("second", Waiter)
    await nodes.gateway()
    task_id = await nodes.submit("waiter", {"sleep": 0.5, "signal_timeout": 3600})

    async def slept() -> bool:
        tree = await nodes.client.get(f"/tasks/{task_id}/tree", headers=HEADERS)
        return [step["kind"] for step in tree.json()["steps"]] == ["step", "sleep", "signal"]

    await eventually(slept, timeout=60, interval=0.05)  # the timer fired; now the signal
    sent = await nodes.client.post(
        f"/tasks/{task_id}/signals/approve", json={"by": "ada"}, headers=HEADERS
    )
    assert sent.status_code == 202, sent.text
    done = await nodes.ended(task_id)
    assert done["status"] == "succeeded", done
    assert done["result"] == {"decision": {"by": "ada"}}
    assert effects == {"before": 1, "after": 1}


async def test_cancelling_a_task_cancels_its_handler_on_another_node(nodes: Nodes) -> None:
    worker = await nodes.node("worker", Stuck)
    await nodes.gateway()
    task_id = await nodes.submit("stuck", {})
    await eventually(lambda: effects["started"] == 1, timeout=60)
    cancelled = await nodes.client.post(f"/tasks/{task_id}/cancel", headers=HEADERS)
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    await eventually(lambda: effects["cancelled"] == 1, timeout=30)
    assert worker.stats()["cancelled"] == 1
    assert (await nodes.task(task_id))["status"] == "cancelled"


async def test_a_task_past_its_deadline_ends_timed_out_and_its_handler_stops(
    nodes: Nodes,
) -> None:
    await nodes.node("worker", Stuck)
    await nodes.gateway()
    task_id = await nodes.submit("stuck", {}, deadline=0.5)
    done = await nodes.ended(task_id)
    assert done["status"] == "timed_out", done
    await eventually(lambda: effects["cancelled"] == 1, timeout=30)
