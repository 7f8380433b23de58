"""Waiting costs nothing: a handler in a long `ctx.sleep` or `ctx.signal` parks — its agent
takes other messages meanwhile — and the task carries on when the timer ends or the signal
is sent (pushed by the gateway that takes it, not found by polling); cancelling a parked
task means nothing wakes it again.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI

from mas import Agent, HandlerResult, Message, TaskResult, UsageError
from mas.agents.echo import EchoAgent
from mas.api.app import create_app
from mas.api.state import Gateway
from mas.config import OutboxSettings, WorkflowSettings
from mas.testing import eventually
from tests.unit.api.conftest import auth, make_settings, serving

pytestmark = pytest.mark.anyio


class Waiter(Agent):
    """A step, then what the payload says: `sleep` seconds, a `signal` or a `gather` of a
    step and a sleep; then a last step. Counts each step's runs per task."""

    type = "waiter"
    max_attempts = 1
    runs: ClassVar[Counter[tuple[str, str]]] = Counter()

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        task_id = message.task_id
        assert task_id is not None
        payload = message.payload
        await ctx.step("before", self._run, task_id, "before")
        got: Any = None
        if "sleep" in payload:
            await ctx.sleep(float(payload["sleep"]))
        elif "signal" in payload:
            got = await ctx.signal(payload["signal"], timeout=float(payload.get("timeout", 60)))
        elif "gather" in payload:
            got = await ctx.gather(
                ctx.step("side", self._run, task_id, "side"), ctx.sleep(float(payload["gather"]))
            )
        await ctx.step("after", self._run, task_id, "after")
        return TaskResult.succeeded(task_id, {"got": got})

    def _run(self, task_id: str, name: str) -> str:
        type(self).runs[(task_id, name)] += 1
        return name


def _app(tmp_path: Path, sweep_interval: float = 0.05) -> FastAPI:
    settings = make_settings(
        tmp_path,
        workflow=WorkflowSettings(park_after=0.1),
        outbox=OutboxSettings(sweep_interval=sweep_interval),
    )
    return create_app(settings, start_agents=[EchoAgent, Waiter], agent_classes=[EchoAgent, Waiter])


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    Waiter.runs = Counter()
    app = _app(tmp_path)
    async with serving(app) as client:
        client.gateway = app.state.gateway  # type: ignore[attr-defined]
        yield client


def _gateway(client: httpx.AsyncClient) -> Gateway:
    gateway: Gateway = client.gateway  # type: ignore[attr-defined]
    return gateway


async def _start(client: httpx.AsyncClient, **payload: Any) -> str:
    created = await client.post(
        "/tasks/", json={"type": "waiter", "payload": payload}, headers=auth()
    )
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


async def _finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    done = await client.get(f"/tasks/{task_id}", params={"wait": 20}, headers=auth())
    task: dict[str, Any] = done.json()
    return task


async def _parked(client: httpx.AsyncClient, count: int = 1) -> None:
    runtime = _gateway(client).runtime
    await eventually(lambda: runtime.stats()["parked"] >= count, timeout=30)


async def test_a_long_sleep_parks_and_the_agent_takes_other_work_meanwhile(
    client: httpx.AsyncClient,
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    sleeping = await _start(client, sleep=1.5)
    await _parked(client)
    # The same (single) agent handles another task while the first one waits.
    quick = await _start(client, sleep=0)
    assert (await _finished(client, quick))["status"] == "succeeded"
    still = await client.get(f"/tasks/{sleeping}", headers=auth())
    assert still.json()["status"] == "running"

    task = await _finished(client, sleeping)
    assert task["status"] == "succeeded", task
    assert loop.time() - started >= 1.5  # the timer held
    assert Waiter.runs[(sleeping, "before")] == 1  # not redone when it woke
    assert Waiter.runs[(sleeping, "after")] == 1


async def test_a_signal_wakes_a_parked_wait_at_once(tmp_path: Path) -> None:
    """Relays sweep for due wake-ups once a minute here: only the push can be this quick."""
    Waiter.runs = Counter()
    app = _app(tmp_path, sweep_interval=60)
    async with serving(app) as client:
        client.gateway = app.state.gateway  # type: ignore[attr-defined]
        task_id = await _start(client, signal="approve", timeout=3600)
        await _parked(client)
        sent = await client.post(
            f"/tasks/{task_id}/signals/approve", json={"ok": True}, headers=auth()
        )
        assert sent.status_code == 202, sent.text
        task = await _finished(client, task_id)
    assert task["status"] == "succeeded", task
    assert task["result"] == {"got": {"ok": True}}
    assert Waiter.runs[(task_id, "before")] == 1


async def test_a_parked_signal_wait_times_out_when_its_deadline_passes(
    client: httpx.AsyncClient,
) -> None:
    task_id = await _start(client, signal="approve", timeout=0.5)
    task = await _finished(client, task_id)
    assert task["status"] in ("failed", "dead_lettered"), task
    assert task["error"]["type"] == "SignalTimeout"
    assert _gateway(client).runtime.stats()["parked"] == 1  # it had parked, not polled


async def test_a_gather_parks_once_its_other_steps_have_finished(
    client: httpx.AsyncClient,
) -> None:
    task_id = await _start(client, gather=0.5)
    task = await _finished(client, task_id)
    assert task["status"] == "succeeded", task
    assert task["result"] == {"got": ["side", None]}
    assert Waiter.runs[(task_id, "side")] == 1  # finished before the park, not redone
    assert _gateway(client).runtime.stats()["parked"] == 1


async def test_a_cancelled_parked_task_is_never_woken(client: httpx.AsyncClient) -> None:
    task_id = await _start(client, sleep=3600)
    await _parked(client)
    store = _gateway(client).store
    assert task_id in await store.outbox_ids()  # its wake-up
    cancelled = await client.post(f"/tasks/{task_id}/cancel", headers=auth())
    assert cancelled.status_code == 200, cancelled.text
    assert task_id not in await store.outbox_ids()
    assert Waiter.runs[(task_id, "after")] == 0


async def test_a_negative_wait_is_a_usage_error(client: httpx.AsyncClient) -> None:
    task_id = await _start(client, sleep=-1)
    task = await _finished(client, task_id)
    assert task["error"]["type"] == UsageError.__name__
    assert "0 seconds or more" in task["error"]["message"]
