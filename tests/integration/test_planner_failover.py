"""The LLM planner in the deployment it is for: a worker killed with SIGKILL in the middle of
a plan. Its successor takes the recorded plan and the recorded answers, so the model (a real
chat-completions server run by the test, which counts the calls) is never asked the same
thing twice: not for the plan, not for a finished step."""

from __future__ import annotations

import json

import pytest

from mas.testing import eventually
from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.integration.system_support import WRITER, System, rows, system
from tests.unit.agents.model_server import ModelServer, model

__all__ = ["amqp_scope", "amqp_vhost_url", "model", "system"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

PLANNER = "mas.agents.planner:PlannerAgent"
PLAN = {
    "steps": [
        {"id": "a", "capability": "write", "input": {"calls": 1}},
        {"id": "b", "capability": "write", "input": {"calls": 1, "pause": 4}, "depends_on": ["a"]},
    ]
}


async def test_a_worker_killed_mid_plan_makes_its_successor_ask_the_model_nothing_twice(
    system: System, model: ModelServer
) -> None:
    model.script = [json.dumps(PLAN), "part a", "part b"]
    system.env |= {"MAS_LLM__BASE_URL": model.url, "MAS_LLM__MODEL": "test-model"}
    first = system.worker(PLANNER, WRITER)
    system.api()
    async with system.client() as client:
        created = await client.post("/tasks/", json={"type": "planner", "payload": {"goal": "x"}})
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]

        async def step_b_running() -> bool:
            found = await rows(
                system.pg,
                f"SELECT status FROM tasks WHERE parent_id = '{task_id}' ORDER BY created_at",
            )
            return [row["status"] for row in found] == ["succeeded", "running"]

        # The plan and step a are recorded; step b waits before its call: kill it there.
        await eventually(step_b_running, timeout=60)
        assert model.calls == 2
        first.kill()
        system.worker(PLANNER, WRITER)
        done = (await client.get(f"/tasks/{task_id}", params={"wait": 60})).json()
    assert done["status"] == "succeeded", done
    assert done["result"]["steps"] == {"a": {"parts": 1}, "b": {"parts": 1}}
    assert model.calls == 3  # the plan, step a's call, step b's call: each once
    assert [request["messages"][-1]["content"] for request in model.requests[1:]] == [
        "part 0",
        "part 0",
    ]
