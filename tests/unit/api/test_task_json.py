"""Every route that returns a task writes it in one shape: `TaskOut`, as the OpenAPI
document describes it (create, get, wait, list items, event data, cancel)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from mas.api.schemas import TaskOut
from mas.api.state import Gateway
from tests.unit.api.conftest import TroubleAgent, auth
from tests.unit.api.test_task_events import events

pytestmark = pytest.mark.anyio


async def stored(gw: Gateway, task_id: str) -> dict[str, Any]:
    task = await gw.store.get_task(task_id)
    assert task is not None
    return TaskOut.of(task).model_dump(mode="json")


async def test_every_task_route_writes_the_documented_task_out(
    client: httpx.AsyncClient, gw: Gateway, trouble: type[TroubleAgent]
) -> None:
    document = (await client.get("/openapi.json")).json()
    documented = list(document["components"]["schemas"]["TaskOut"]["properties"])
    assert documented == list(TaskOut.model_fields)

    body = {"type": "echo", "payload": {"text": "é ✓ 日本", "none": None}}
    created = await client.post("/tasks/", json=body, params={"wait": 5}, headers=auth())
    assert created.status_code == 200, created.text
    task_id = created.json()["id"]
    listed = (await client.get("/tasks/", headers=auth())).json()["items"]
    streamed = await client.get(f"/tasks/{task_id}/events", params={"timeout": 5}, headers=auth())
    answers = {
        "create": created.json(),
        "repeat": (
            await client.post("/tasks/", json={**body, "id": task_id}, headers=auth())
        ).json(),
        "get": (await client.get(f"/tasks/{task_id}", headers=auth())).json(),
        "wait": (await client.get(f"/tasks/{task_id}", params={"wait": 5}, headers=auth())).json(),
        "list item": next(item for item in listed if item["id"] == task_id),
        "event": events(streamed.text)[-1],
    }
    expected = await stored(gw, task_id)
    assert expected["status"] == "succeeded"
    for route, answer in answers.items():
        assert list(answer) == documented, route
        assert answer == expected, route

    slow = await client.post(
        "/tasks/", json={"agent": "trouble", "message_type": "slow"}, headers=auth()
    )
    await asyncio.wait_for(trouble.started.wait(), 5)
    cancelled = await client.post(f"/tasks/{slow.json()['id']}/cancel", headers=auth())
    assert cancelled.status_code == 200, cancelled.text
    assert list(cancelled.json()) == documented
    assert cancelled.json() == await stored(gw, slow.json()["id"])
    assert cancelled.json()["error"] is None and cancelled.json()["status"] == "cancelled"


async def test_a_failed_task_reads_the_same_from_every_route(
    client: httpx.AsyncClient, gw: Gateway
) -> None:
    failed = await client.post(
        "/tasks/",
        json={"agent": "trouble", "message_type": "boom"},
        params={"wait": 5},
        headers=auth(),
    )
    assert failed.status_code == 200, failed.text
    task_id = failed.json()["id"]
    expected = await stored(gw, task_id)
    assert expected["error"] is not None
    listed = (await client.get("/tasks/", headers=auth())).json()["items"]
    streamed = await client.get(f"/tasks/{task_id}/events", params={"timeout": 5}, headers=auth())
    for answer in (
        failed.json(),
        (await client.get(f"/tasks/{task_id}", headers=auth())).json(),
        next(item for item in listed if item["id"] == task_id),
        events(streamed.text)[-1],
    ):
        assert answer == expected
