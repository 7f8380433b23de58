"""/dashboard serves a page without data; /dashboard/data needs a token that may read both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from mas.api.state import Gateway
from mas.persistence.models import tasks
from tests.unit.api.conftest import TokenFactory

pytestmark = pytest.mark.anyio


async def test_the_page_is_served_without_a_token_and_holds_no_data(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/dashboard/data" in response.text
    assert "trouble" not in response.text  # agent names come from the data call only


async def test_the_data_shows_agents_counters_and_recent_tasks(
    client: httpx.AsyncClient, token: TokenFactory
) -> None:
    created = await client.post(
        "/tasks/", json={"type": "echo", "payload": {"n": 1}}, headers=token()
    )
    done = await client.get(f"/tasks/{created.json()['id']}?wait=5", headers=token())
    assert done.json()["status"] == "succeeded"
    data = (await client.get("/dashboard/data", headers=token("agents:read", "tasks:read"))).json()
    assert {a["id"]: a["live"] for a in data["agents"]} == {"echo": True, "trouble": True}
    assert data["task_counts"] == {"succeeded": 1}
    assert [t["id"] for t in data["tasks"]] == [created.json()["id"]]
    assert data["runtime"]["handled"] >= 1
    assert data["transport"] == "memory"


async def test_the_data_needs_both_read_scopes(
    client: httpx.AsyncClient, token: TokenFactory, problem: Callable[..., dict[str, Any]]
) -> None:
    anonymous = await client.get("/dashboard/data")
    problem(anonymous, 401)
    agents_only = await client.get("/dashboard/data", headers=token("agents:read"))
    problem(agents_only, 403, "tasks:read")


async def test_a_stored_value_the_api_refuses_spoils_its_row_not_the_page(
    client: httpx.AsyncClient, token: TokenFactory, gw: Gateway
) -> None:
    ids = []
    for n in range(2):
        created = await client.post(
            "/tasks/", json={"type": "echo", "payload": {"n": n}}, headers=token()
        )
        ids.append(created.json()["id"])
        await client.get(f"/tasks/{ids[-1]}?wait=5", headers=token())
    async with gw.store.writing() as conn:  # as a newer version might have written it
        await conn.execute(update(tasks).where(tasks.c.id == ids[0]).values(status="paused"))

    response = await client.get("/dashboard/data", headers=token())
    assert response.status_code == 200, response.text
    shown = {t["id"]: t for t in response.json()["tasks"]}
    assert shown[ids[1]]["status"] == "succeeded"
    assert set(shown[ids[0]]) == {"id", "unreadable"}
    assert "status" in shown[ids[0]]["unreadable"]


async def test_the_data_has_the_dead_letters_to_settle_for_who_may_read_them(
    client: httpx.AsyncClient, token: TokenFactory, gw: Gateway
) -> None:
    body = {"agent": "trouble", "message_type": "boom"}
    created = await client.post("/tasks/", json=body, headers=token())
    await client.get(f"/tasks/{created.json()['id']}?wait=5", headers=token())
    await gw.runtime.journal.flush()  # type: ignore[union-attr]

    data = (await client.get("/dashboard/data", headers=token())).json()
    assert [(d["task_id"], d["status"]) for d in data["dead_letters"]] == [
        (created.json()["id"], "dead")
    ]
    limited = await client.get("/dashboard/data", headers=token("agents:read", "tasks:read"))
    assert limited.json()["dead_letters"] is None
