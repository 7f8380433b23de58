"""A task's budget across a cluster: a plan run by `mas worker` processes (two of them
writing, each step's model calls on whichever worker takes it) stops at the step whose call
goes past the budget, and the task reports what was spent. The model is a real
chat-completions server run by the test (each answer: 15 tokens), which counts the calls."""

from __future__ import annotations

import pytest

from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.integration.system_support import WRITER, System, system
from tests.unit.agents.model_server import ModelServer, model

__all__ = ["amqp_scope", "amqp_vhost_url", "model", "system"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PLANNER = "mas.agents.planner:PlannerAgent"


async def test_a_plan_across_two_workers_stops_at_the_step_that_crosses_its_budget(
    system: System, model: ModelServer
) -> None:
    model.script = ["a part"]
    system.env |= {"MAS_LLM__BASE_URL": model.url, "MAS_LLM__MODEL": "test-model"}
    system.worker(PLANNER, WRITER, instances="2")
    system.worker(WRITER, instances="2")
    system.api()
    steps = [
        {"id": "a", "capability": "write", "input": {"calls": 2}},
        {"id": "b", "capability": "write", "input": {"calls": 2}, "depends_on": ["a"]},
        {"id": "c", "capability": "write", "input": {"calls": 1}, "depends_on": ["b"]},
    ]
    body = {"type": "planner", "payload": {"steps": steps}, "budget": {"tokens": 50}}
    async with system.client() as client:
        created = await client.post("/tasks/", json=body)
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        done = (await client.get(f"/tasks/{task_id}", params={"wait": 60})).json()
        children = (await client.get("/tasks/", params={"parent": task_id})).json()["items"]
    assert done["status"] == "budget_exceeded", done
    # a: 15, 30 tokens; b: 45, then 60 > 50 ends it. Step c never ran.
    assert model.calls == 4
    assert done["spent"]["tokens"] == 60
    assert done["budget"] == {"tokens": 50, "cost": None}
    assert sorted(child["status"] for child in children) == ["budget_exceeded", "succeeded"]
