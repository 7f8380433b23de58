"""GET /tasks/{id}/events: Server-Sent Events of a task's state changes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.anyio


def events(body: str) -> list[dict[str, Any]]:
    """Parse `event: status` / `data: {...}` blocks."""
    parsed = []
    for block in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        assert lines["event"] == "status"
        parsed.append(json.loads(lines["data"]))
    return parsed


async def test_the_stream_ends_with_the_final_status(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]]
) -> None:
    submitted = await client.post(
        "/tasks/", json={"type": "echo", "payload": {"n": 1}}, headers=token()
    )
    task_id = submitted.json()["id"]
    response = await client.get(f"/tasks/{task_id}/events", params={"timeout": 10}, headers=token())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    statuses = [event["status"] for event in events(response.text)]
    assert statuses[-1] == "succeeded"
    assert len(statuses) == len(set(statuses))  # one event per change, no repeats
    assert events(response.text)[-1]["result"] == {"n": 1}


async def test_events_of_an_unknown_task_are_404(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]]
) -> None:
    response = await client.get("/tasks/nope/events", headers=token())
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_events_need_the_read_scope(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]]
) -> None:
    response = await client.get("/tasks/x/events", headers=token("tasks:write"))
    assert response.status_code == 403
