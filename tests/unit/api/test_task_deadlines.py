"""Task deadlines: `deadline` (seconds) on `POST /tasks/`; past it the task ends `timed_out`
with the tasks its workflow started, its handlers are cancelled, and a parked handler's
wake-up is dropped; a task that ends in time keeps its result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mas.agents.echo import EchoAgent
from mas.api.app import create_app
from mas.config import WorkflowSettings
from mas.testing import eventually
from tests.unit.api.conftest import auth, make_settings, serving
from tests.unit.api.test_parked_tasks import Waiter
from tests.unit.api.test_task_tree import Planner, Stuck

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    Stuck.cancelled = 0
    agents = [EchoAgent, Planner, Stuck, Waiter]
    settings = make_settings(
        tmp_path, heartbeat_interval=0.1, workflow=WorkflowSettings(park_after=0.1)
    )
    app = create_app(settings, start_agents=agents, agent_classes=agents)
    async with serving(app) as client:
        client.store = app.state.gateway.store  # type: ignore[attr-defined]
        yield client


async def _submit(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await client.post("/tasks/", json=body, headers=auth())
    assert created.status_code == 202, created.text
    task: dict[str, Any] = created.json()
    return task


async def _ended(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    done = await client.get(f"/tasks/{task_id}", params={"wait": 20}, headers=auth())
    task: dict[str, Any] = done.json()
    return task


async def test_a_task_past_its_deadline_times_out_with_its_children(
    client: httpx.AsyncClient,
) -> None:
    body = {"type": "planner", "payload": {"topics": ["a"], "via": "agent:stuck"}}
    task = await _submit(client, {**body, "deadline": 1.0})
    assert task["deadline"] is not None
    ended = await _ended(client, task["id"])
    assert ended["status"] == "timed_out", ended
    assert ended["error"]["type"] == "DeadlineExceeded"
    children = await client.get("/tasks/", params={"parent": task["id"]}, headers=auth())
    assert [c["status"] for c in children.json()["items"]] == ["timed_out"]
    # The child's handler (blocked for ever) was cancelled: the agent is free.
    await eventually(lambda: Stuck.cancelled == 1, timeout=20)


async def test_a_parked_task_past_its_deadline_is_never_woken(
    client: httpx.AsyncClient,
) -> None:
    task = await _submit(client, {"type": "waiter", "payload": {"sleep": 3600}, "deadline": 1})
    ended = await _ended(client, task["id"])
    assert ended["status"] == "timed_out", ended
    store = client.store  # type: ignore[attr-defined]
    assert task["id"] not in await store.outbox_ids()


async def test_a_task_that_ends_in_time_keeps_its_result(client: httpx.AsyncClient) -> None:
    task = await _submit(client, {"type": "echo", "payload": {"x": 1}, "deadline": 60})
    ended = await _ended(client, task["id"])
    assert (ended["status"], ended["result"]) == ("succeeded", {"x": 1})


@pytest.mark.parametrize("deadline", [0, -1, 10**9, "soon"])
async def test_a_deadline_that_is_not_a_positive_number_of_seconds_is_422(
    client: httpx.AsyncClient, problem: Any, deadline: Any
) -> None:
    refused = await client.post(
        "/tasks/", json={"type": "echo", "deadline": deadline}, headers=auth()
    )
    problem(refused, 422, "deadline")
