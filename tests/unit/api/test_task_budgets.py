"""Task budgets: `budget` (tokens and/or cost) on `POST /tasks/` is shared by the task's model
calls and its children's; the call that goes past it ends the task, and its children,
`budget_exceeded`, and no later call is made. The model is a real chat-completions server
(each answer: 10 prompt + 5 completion tokens) that counts its calls.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mas.agents import PlannerAgent
from mas.api.app import create_app
from tests.model_agents import Writer
from tests.unit.agents.model_server import ModelServer, model
from tests.unit.api.conftest import auth, make_settings, serving

__all__ = ["model"]

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path: Path, model: ModelServer) -> AsyncIterator[httpx.AsyncClient]:
    model.script = ["a part"]
    agents = [Writer, PlannerAgent]
    settings = make_settings(
        tmp_path, llm=model.settings(prompt_price=1000.0, completion_price=2000.0)
    )
    app = create_app(settings, start_agents=agents, agent_classes=agents)
    async with serving(app) as client:
        yield client


async def _run(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/tasks/", json=body, headers=auth())
    assert created.status_code == 202, created.text
    assert created.json()["budget"] == body.get("budget")
    done = await client.get(f"/tasks/{created.json()['id']}", params={"wait": 20}, headers=auth())
    task: dict[str, Any] = done.json()
    return task


async def test_the_call_that_goes_past_the_budget_ends_the_task_and_no_more_are_made(
    client: httpx.AsyncClient, model: ModelServer
) -> None:
    budget = {"tokens": 40, "cost": None}
    task = await _run(client, {"type": "writer", "payload": {"calls": 5}, "budget": budget})
    assert task["status"] == "budget_exceeded", (task["error"], task["spent"], model.calls)
    assert model.calls == 3  # 15, 30, then 45 > 40: the fourth and fifth never went
    assert task["spent"] == {"tokens": 45, "cost": pytest.approx(3 * (10 * 1000 + 5 * 2000) / 1e6)}
    assert task["error"]["type"] == "BudgetExceeded"
    assert "spent 45 tokens" in task["error"]["message"] and "40 tokens" in task["error"]["message"]


async def test_a_task_within_its_budget_reports_what_it_spent(
    client: httpx.AsyncClient, model: ModelServer
) -> None:
    budget = {"tokens": None, "cost": 1.0}
    task = await _run(client, {"type": "writer", "payload": {"calls": 3}, "budget": budget})
    assert task["status"] == "succeeded", task
    assert task["result"] == {"parts": 3}
    assert task["spent"]["tokens"] == 45 and model.calls == 3


async def test_a_plans_steps_share_the_budget_and_stop_at_the_step_that_crosses_it(
    client: httpx.AsyncClient, model: ModelServer
) -> None:
    steps = [
        {"id": "a", "capability": "write", "input": {"calls": 2}},
        {"id": "b", "capability": "write", "input": {"calls": 2}, "depends_on": ["a"]},
        {"id": "c", "capability": "write", "input": {"calls": 1}, "depends_on": ["b"]},
    ]
    body = {"type": "planner", "payload": {"steps": steps}, "budget": {"tokens": 50}}
    task = await _run(client, {**body, "budget": {"tokens": 50, "cost": None}})
    assert task["status"] == "budget_exceeded", (task["error"], task["spent"], model.calls)
    # a: 15, 30; b: 45, then 60 > 50. Step c never ran.
    assert model.calls == 4
    assert task["spent"]["tokens"] == 60
    children = await client.get("/tasks/", params={"parent": task["id"]}, headers=auth())
    statuses = sorted(child["status"] for child in children.json()["items"])
    assert statuses == ["budget_exceeded", "succeeded"]


async def test_a_budget_names_a_positive_limit(client: httpx.AsyncClient) -> None:
    for budget in ({}, {"tokens": 0}, {"cost": -1}, {"tokens": 10, "dollars": 1}):
        refused = await client.post(
            "/tasks/", json={"type": "writer", "payload": {"calls": 1}, "budget": budget},
            headers=auth(),
        )  # fmt: skip
        assert refused.status_code == 422, (budget, refused.text)


async def test_a_plan_without_a_budget_reports_what_its_steps_spent(
    client: httpx.AsyncClient, model: ModelServer
) -> None:
    steps = [
        {"id": "a", "capability": "write", "input": {"calls": 2}},
        {"id": "b", "capability": "write", "input": {"calls": 1}, "depends_on": ["a"]},
    ]
    task = await _run(client, {"type": "planner", "payload": {"steps": steps}})
    assert task["status"] == "succeeded", task
    assert task["result"]["spent"] == {"tokens": 45, "cost": pytest.approx(0.06)}
    assert task["spent"]["tokens"] == 45  # in the `?wait` answer too
    read = (await client.get(f"/tasks/{task['id']}", headers=auth())).json()
    assert read["budget"] is None and read["spent"]["tokens"] == 45
    assert model.calls == 3


async def test_the_same_id_with_another_budget_is_another_request(
    client: httpx.AsyncClient,
) -> None:
    body = {"id": "t-budget", "type": "writer", "payload": {"calls": 0}, "budget": {"tokens": 9}}
    first = await client.post("/tasks/", json=body, headers=auth())
    assert first.status_code == 202, first.text
    again = await client.post("/tasks/", json=body, headers=auth())
    assert again.status_code in (200, 202) and again.json()["id"] == "t-budget"
    other = await client.post("/tasks/", json={**body, "budget": {"tokens": 99}}, headers=auth())
    assert other.status_code == 422, other.text  # IdempotencyKeyReused
