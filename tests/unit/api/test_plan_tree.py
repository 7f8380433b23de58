"""A planner's task as a tree while it runs: `GET /tasks/{id}/tree` shows the plan (the
result of its `plan` step), each answered step's answer, and the child task of each step
asked, with its status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mas import Agent, HandlerResult, Message
from mas.agents import EchoAgent, PlannerAgent
from mas.api.app import create_app
from mas.testing import eventually
from tests.unit.api.conftest import auth, make_settings, serving

pytestmark = pytest.mark.anyio


class Waiter(Agent):
    """Offers `wait`: blocks until its task is cancelled."""

    type = "waiter"
    capabilities = ("wait",)

    async def handle_message(self, message: Message) -> HandlerResult:
        await asyncio.Event().wait()
        return None


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    agents = [EchoAgent, PlannerAgent, Waiter]
    app = create_app(
        make_settings(tmp_path, heartbeat_interval=0.1), start_agents=agents, agent_classes=agents
    )
    async with serving(app) as client:
        yield client


async def test_a_running_plan_shows_as_a_tree(client: httpx.AsyncClient) -> None:
    steps = [
        {"id": "a", "capability": "echo", "input": {"x": 1}},
        {"id": "b", "capability": "wait", "input": {}, "depends_on": ["a"]},
    ]
    created = await client.post(
        "/tasks/", json={"type": "planner", "payload": {"steps": steps}}, headers=auth()
    )
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    tree: dict[str, Any] = {}

    async def b_running() -> bool:
        nonlocal tree
        tree = (await client.get(f"/tasks/{task_id}/tree", headers=auth())).json()
        return sorted(c["status"] for c in tree["children"]) == ["running", "succeeded"]

    await eventually(b_running, timeout=20)
    assert tree["task"]["status"] == "running"
    plan, asked = tree["steps"]
    assert (plan["name"], plan["kind"]) == ("plan", "step")
    assert [s["id"] for s in plan["result"]["plan"]["steps"]] == ["a", "b"]
    assert (asked["name"], asked["kind"], asked["result"]) == ("capability:echo", "ask", {"x": 1})
    cancelled = await client.post(f"/tasks/{task_id}/cancel", headers=auth())
    assert cancelled.status_code == 200, cancelled.text
