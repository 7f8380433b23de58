"""Signals: `POST /tasks/{id}/signals/{name}` delivers a JSON payload to the workflow that
waits for it with `ctx.signal(name)`, whether it waits already or only later; the first
signal of a name counts; an unknown (or another caller's) task is 404, an ended one 409.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import httpx
import pytest

from mas import Agent, HandlerResult, Message, TaskResult
from mas.api.state import Gateway
from mas.testing import eventually
from tests.unit.api.conftest import SECRET, auth

pytestmark = pytest.mark.anyio


class Approver(Agent):
    """Prepares, waits for `gate` (when set), then for the signal "approve"."""

    type = "approver"
    max_attempts = 1
    gate: ClassVar[asyncio.Event | None] = None
    prepared: ClassVar[int] = 0

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        await ctx.step("prepare", self._prepare)
        if self.gate is not None:
            await self.gate.wait()
        decision = await ctx.signal("approve", timeout=float(message.payload.get("timeout", 30)))
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"decision": decision})

    def _prepare(self) -> str:
        type(self).prepared += 1
        return "ready"


@pytest.fixture
async def approver(gw: Gateway) -> type[Approver]:
    Approver.gate, Approver.prepared = None, 0
    await gw.runtime.spawn(Approver, id="approver")
    return Approver


async def _start(client: httpx.AsyncClient, **payload: Any) -> str:
    created = await client.post(
        "/tasks/", json={"type": "approver", "payload": payload}, headers=auth()
    )
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


async def _signal(
    client: httpx.AsyncClient, task_id: str, body: Any, name: str = "approve", **headers: str
) -> httpx.Response:
    return await client.post(
        f"/tasks/{task_id}/signals/{name}", json=body, headers=headers or auth()
    )


async def _finished(client: httpx.AsyncClient, task_id: str) -> dict[str, Any]:
    done = await client.get(f"/tasks/{task_id}", params={"wait": 10}, headers=auth())
    task: dict[str, Any] = done.json()
    return task


async def _finish(client: httpx.AsyncClient, task_id: str, approver: type[Approver]) -> None:
    """Let a task waiting at the gate end (a handler left waiting holds up the shutdown)."""
    assert (await _signal(client, task_id, {"ok": True})).status_code == 202
    assert approver.gate is not None
    approver.gate.set()
    assert (await _finished(client, task_id))["status"] == "succeeded"


async def test_a_waiting_workflow_gets_the_signal_and_finishes(
    client: httpx.AsyncClient, approver: type[Approver]
) -> None:
    task_id = await _start(client)
    await eventually(lambda: approver.prepared == 1)  # it is waiting for the signal now
    sent = await _signal(client, task_id, {"ok": True, "by": "ada"})
    assert sent.status_code == 202, sent.text
    assert sent.json() == {
        "task_id": task_id,
        "name": "approve",
        "stored": True,
        "task_status": "running",
    }
    task = await _finished(client, task_id)
    assert task["status"] == "succeeded"
    assert task["result"] == {"decision": {"ok": True, "by": "ada"}}


async def test_a_signal_sent_before_the_wait_is_kept_for_it(
    client: httpx.AsyncClient, approver: type[Approver]
) -> None:
    approver.gate = asyncio.Event()
    task_id = await _start(client)
    assert (await _signal(client, task_id, {"ok": False})).json()["stored"] is True
    approver.gate.set()
    task = await _finished(client, task_id)
    assert task["result"] == {"decision": {"ok": False}}


async def test_the_first_signal_of_a_name_counts(
    client: httpx.AsyncClient, approver: type[Approver]
) -> None:
    approver.gate = asyncio.Event()
    task_id = await _start(client)
    assert (await _signal(client, task_id, {"n": 1})).json()["stored"] is True
    again = await _signal(client, task_id, {"n": 2})
    assert (again.status_code, again.json()["stored"]) == (202, False)
    approver.gate.set()
    assert (await _finished(client, task_id))["result"] == {"decision": {"n": 1}}


async def test_no_signal_in_time_fails_the_task_with_signal_timeout(
    client: httpx.AsyncClient, approver: type[Approver]
) -> None:
    task_id = await _start(client, timeout=0.2)
    task = await _finished(client, task_id)
    assert task["status"] in ("failed", "dead_lettered"), task
    assert task["error"]["type"] == "SignalTimeout"
    assert "approve" in task["error"]["message"]


async def test_a_signal_to_an_ended_task_is_409_and_to_an_unknown_one_404(
    client: httpx.AsyncClient, approver: type[Approver], problem: Any
) -> None:
    done = await client.post(
        "/tasks/", json={"type": "echo", "payload": {}}, params={"wait": 5}, headers=auth()
    )
    assert done.json()["status"] == "succeeded"
    problem(await _signal(client, done.json()["id"], {}), 409, "succeeded")
    problem(await _signal(client, "no-such-task", {}), 404, "no-such-task")


async def test_another_callers_task_cannot_be_signalled(
    client: httpx.AsyncClient, approver: type[Approver], problem: Any
) -> None:
    from mas.api.auth import mint_token

    approver.gate = asyncio.Event()
    task_id = await _start(client)  # created by "tester"
    mallory = {"Authorization": f"Bearer {mint_token(SECRET, 'mallory', ['tasks:write'], 600)}"}
    problem(await _signal(client, task_id, {"ok": True}, **mallory), 404, task_id)
    await _finish(client, task_id, approver)


async def test_bad_signal_names_and_bodies_are_422(
    client: httpx.AsyncClient, approver: type[Approver], problem: Any
) -> None:
    approver.gate = asyncio.Event()
    task_id = await _start(client)
    problem(await _signal(client, task_id, {}, name="-bad"), 422)
    problem(await _signal(client, task_id, [1, 2]), 422)  # the payload is a JSON object
    await _finish(client, task_id, approver)


async def test_signalling_needs_the_write_scope(
    client: httpx.AsyncClient, approver: type[Approver], problem: Any
) -> None:
    approver.gate = asyncio.Event()
    task_id = await _start(client)
    problem(await _signal(client, task_id, {}, **auth("tasks:read")), 403)
    await _finish(client, task_id, approver)
