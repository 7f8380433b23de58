"""Routing policy for a capability nobody offers (the original design's): capability first,
then the task's type, then — for a task with a deadline — waiting, backing off, for an
agent that offers it, until the deadline; then the task fails, naming the capability.
Without a deadline (or a type to fall back on) it is a 404 at once (tests/unit/api/
test_tasks_api.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mas import Agent, HandlerResult, Message, TaskResult
from mas.agents.echo import EchoAgent
from mas.api.app import create_app
from mas.config import OutboxSettings
from tests.unit.api.conftest import auth, make_settings, serving

pytestmark = pytest.mark.anyio


class Translator(Agent):
    type = "translator"
    capabilities = ("translate",)

    async def handle_message(self, message: Message) -> HandlerResult:
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"fr": f"le {message.payload['en']}"})


@pytest.fixture
async def app(tmp_path: Path) -> FastAPI:
    settings = make_settings(tmp_path, outbox=OutboxSettings(sweep_interval=0.05))
    return create_app(settings, start_agents=[EchoAgent], agent_classes=[EchoAgent, Translator])


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as client:
        yield client


async def _submit(client: httpx.AsyncClient, deadline: float) -> dict[str, Any]:
    body = {"capability": "translate", "payload": {"en": "cat"}, "deadline": deadline}
    created = await client.post("/tasks/", json=body, headers=auth())
    assert created.status_code == 202, created.text
    task: dict[str, Any] = created.json()
    return task


async def test_a_task_waits_for_an_agent_that_offers_its_capability(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    task = await _submit(client, deadline=60)
    assert (task["status"], task["target"]) == ("pending", "capability:translate")
    pending = await client.get(f"/tasks/{task['id']}", params={"wait": 0.3}, headers=auth())
    assert pending.json()["status"] == "pending"  # nobody offers it yet

    await app.state.gateway.runtime.spawn(Translator, id="translator")
    done = await client.get(f"/tasks/{task['id']}", params={"wait": 20}, headers=auth())
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"fr": "le cat"}


async def test_past_its_deadline_the_task_fails_naming_the_capability(
    client: httpx.AsyncClient,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = await _submit(client, deadline=1.0)
    done = await client.get(f"/tasks/{task['id']}", params={"wait": 20}, headers=auth())
    ended = done.json()
    assert ended["status"] == "failed", ended
    assert ended["error"]["type"] == "UnknownCapability"
    assert "'translate'" in ended["error"]["message"]
    # It looked until just before its deadline (the last look is 0.25 s before), not
    # failing at once.
    assert loop.time() - started >= 0.7
