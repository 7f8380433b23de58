"""Tasks as trees: what a task's workflow sends (`ctx.ask`, `ctx.send`) are child tasks,
with `parent_id`, their own status and timings; `GET /tasks/{id}/tree` shows the task's
finished steps and children, `GET /tasks/?parent=` lists the children, both only to the
task's owner; cancelling a task cancels its unfinished children (and their handlers).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from mas import Agent, HandlerResult, Message, TaskResult
from mas.agents.echo import EchoAgent
from mas.api.app import create_app
from mas.api.auth import mint_token
from mas.testing import eventually
from tests.unit.api.conftest import SECRET, auth, make_settings, serving

pytestmark = pytest.mark.anyio


class Planner(Agent):
    """Splits its goal into topics, asks an echo agent about each (fan-out/fan-in), tells a
    recorder, and completes with the answers."""

    type = "planner"
    max_attempts = 1

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        topics = await ctx.step("split", lambda: list(message.payload["topics"]))
        answers = await ctx.gather(
            *[ctx.ask(message.payload["via"], Message("q", {"t": t}), timeout=30) for t in topics]
        )
        await ctx.send("agent:recorder", Message("note", {"n": len(answers)}))
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, [a.payload for a in answers])


class Recorder(Agent):
    type = "recorder"
    notes: ClassVar[list[Message]] = []

    async def handle_message(self, message: Message) -> None:
        type(self).notes.append(message)


class Stuck(Agent):
    """Blocks until cancelled; counts the cancellations it saw."""

    type = "stuck"
    cancelled: ClassVar[int] = 0

    async def handle_message(self, message: Message) -> HandlerResult:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            type(self).cancelled += 1
            raise
        return None


class Gate(Agent):
    """Answers once the signal "open" comes to the task it works on (a child task here)."""

    type = "gate"

    async def handle_message(self, message: Message) -> Message:
        decision = await self.ctx.signal("open", timeout=30)
        return message.reply({"decision": decision})


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    Recorder.notes, Stuck.cancelled = [], 0
    agents = [EchoAgent, Planner, Recorder, Stuck, Gate]
    app = create_app(
        make_settings(tmp_path, heartbeat_interval=0.1), start_agents=agents, agent_classes=agents
    )
    async with serving(app) as client:
        yield client


async def _run(
    client: httpx.AsyncClient,
    via: str = "type:echo",
    wait: float = 20,
    topics: tuple[str, ...] | list[str] = ("a", "b"),
) -> Any:
    body = {"type": "planner", "payload": {"topics": list(topics), "via": via}}
    created = await client.post("/tasks/", json=body, params={"wait": wait}, headers=auth())
    assert created.status_code in (200, 202), created.text
    return created.json()


async def test_a_workflows_asks_and_sends_are_child_tasks_in_its_tree(
    client: httpx.AsyncClient,
) -> None:
    task = await _run(client)
    assert task["status"] == "succeeded", task
    assert task["result"] == [{"t": "a"}, {"t": "b"}]
    tree = (await client.get(f"/tasks/{task['id']}/tree", headers=auth())).json()

    assert tree["task"]["id"] == task["id"]
    assert [(s["seq"], s["name"], s["kind"], s["result"]) for s in tree["steps"]] == [
        (0, "split", "step", ["a", "b"]),  # what the step returned
        (1, "type:echo", "ask", {"t": "a"}),  # what the asked agent answered
        (2, "type:echo", "ask", {"t": "b"}),
        (3, "agent:recorder", "send", None),
    ]
    children = tree["children"]
    assert len(children) == 3
    assert {c["parent_id"] for c in children} == {task["id"]}
    assert all(c["status"] == "succeeded" for c in children), children
    assert all(c["started_at"] and c["finished_at"] for c in children)
    asked = sorted((c for c in children if c["type"] == "q"), key=lambda c: c["payload"]["t"])
    assert [(c["target"], c["result"]) for c in asked] == [
        ("type:echo", {"t": "a"}),
        ("type:echo", {"t": "b"}),
    ]
    listed = await client.get("/tasks/", params={"parent": task["id"]}, headers=auth())
    assert {c["id"] for c in listed.json()["items"]} == {c["id"] for c in children}
    one = await client.get(f"/tasks/{children[0]['id']}", headers=auth())
    assert one.json()["parent_id"] == task["id"]  # the owner reads a child directly
    plain = await client.get("/tasks/", headers=auth())
    assert task["id"] in {t["id"] for t in plain.json()["items"]}


async def test_another_caller_sees_neither_the_tree_nor_the_children(
    client: httpx.AsyncClient, problem: Any
) -> None:
    task = await _run(client)
    mallory = {"Authorization": f"Bearer {mint_token(SECRET, 'mallory', ['tasks:read'], 600)}"}
    problem(await client.get(f"/tasks/{task['id']}/tree", headers=mallory), 404, task["id"])
    problem(
        await client.get("/tasks/", params={"parent": task["id"]}, headers=mallory),
        404,
        task["id"],
    )
    problem(await client.get("/tasks/no-such-task/tree", headers=auth()), 404)


async def test_cancelling_a_task_cancels_its_running_children(client: httpx.AsyncClient) -> None:
    task = await _run(client, via="agent:stuck", wait=0)

    async def children() -> list[dict[str, Any]]:
        listed = await client.get("/tasks/", params={"parent": task["id"]}, headers=auth())
        items: list[dict[str, Any]] = listed.json()["items"]
        return items

    async def a_child_runs() -> bool:
        return any(c["status"] == "running" for c in await children())

    await eventually(a_child_runs, timeout=20)
    cancelled = await client.post(f"/tasks/{task['id']}/cancel", headers=auth())
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    assert {c["status"] for c in await children()} == {"cancelled"}
    # The child's handler, on the agent it ran on, was cancelled too.
    await eventually(lambda: Stuck.cancelled == 1, timeout=20)


async def test_a_child_task_waits_for_a_signal_sent_to_it(client: httpx.AsyncClient) -> None:
    task = await _run(client, via="agent:gate", wait=0, topics=["a"])
    running: list[str] = []

    async def child_runs() -> bool:
        listed = await client.get("/tasks/", params={"parent": task["id"]}, headers=auth())
        running[:] = [c["id"] for c in listed.json()["items"] if c["status"] == "running"]
        return bool(running)

    await eventually(child_runs, timeout=20)
    sent = await client.post(
        f"/tasks/{running[0]}/signals/open", json={"by": "ada"}, headers=auth()
    )
    assert sent.status_code == 202, sent.text
    done = await client.get(f"/tasks/{task['id']}", params={"wait": 20}, headers=auth())
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == [{"decision": {"by": "ada"}}]
