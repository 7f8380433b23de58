"""Deeply nested JSON cannot poison the gateway's reads (issue 13, finding 2).

Before, a ~520-byte payload nested 255 deep was accepted and handled; its response was a
plain-text 500 and from then on every read that listed it (`GET /tasks/`, `GET /tasks/{id}`,
the dashboard) failed for everyone until it was pruned. Now such JSON is refused where it
enters (422, nothing stored), and a value stored before that rule is shown as a note.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mas.api.state import Gateway
from mas.messages import MAX_DEPTH

pytestmark = pytest.mark.anyio


def nested(depth: int) -> dict[str, Any]:
    """An object whose objects nest `depth` deep, itself included."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_a_payload_deeper_than_the_limit_is_422_and_nothing_is_stored(
    client: httpx.AsyncClient, token: Any, problem: Any, gw: Gateway
) -> None:
    refused = await client.post(
        "/tasks/", json={"type": "echo", "payload": nested(MAX_DEPTH + 1)}, headers=token()
    )
    problem(refused, 422, "payload", f"deeper than {MAX_DEPTH}")
    deep_list: list[Any] = []
    for _ in range(255):
        deep_list = [deep_list]
    also = await client.post(
        "/tasks/", json={"type": "echo", "payload": {"x": deep_list}}, headers=token()
    )
    problem(also, 422, "payload")
    assert await gw.store.list_tasks() == []
    accepted = await client.post(
        "/tasks/",
        json={"type": "echo", "payload": nested(MAX_DEPTH)},
        params={"wait": 10},
        headers=token(),
    )
    assert accepted.json()["status"] == "succeeded", accepted.text


@pytest.mark.parametrize("field", ["payload", "metadata"])
async def test_a_message_deeper_than_the_limit_is_422(
    client: httpx.AsyncClient, token: Any, problem: Any, field: str
) -> None:
    body = {"type": "ping", field: nested(MAX_DEPTH + 1)}
    problem(await client.post("/agents/echo/message", json=body, headers=token()), 422, field)


async def test_a_task_stored_nested_too_deep_before_the_rule_does_not_break_reads(
    client: httpx.AsyncClient, token: Any, gw: Gateway
) -> None:
    await gw.store.create_task("poisoned", "echo", nested(255))  # as older versions allowed
    await gw.store.create_task("healthy", "echo", {"text": "hi"})
    listed = await client.get("/tasks/", headers=token())
    assert listed.status_code == 200, listed.text
    by_id = {task["id"]: task for task in listed.json()["items"]}
    assert by_id["healthy"]["payload"] == {"text": "hi"}
    assert "nested deeper than" in by_id["poisoned"]["payload"]["unreadable"]
    one = await client.get("/tasks/poisoned", headers=token())
    assert one.status_code == 200, one.text
    too_deep = nested(300)  # beyond what pydantic writes out at all
    await gw.store.create_task("poisoned-more", "echo", too_deep)
    more = await client.get("/tasks/poisoned-more", headers=token())
    assert more.status_code == 200, more.text
    assert "nested deeper than" in more.json()["payload"]["unreadable"]
    dashboard = await client.get("/dashboard/data", headers=token())
    assert dashboard.status_code == 200, dashboard.text
