"""/dashboard serves a page without data; /dashboard/data needs a token that may read both."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, get_args

import httpx
import pytest
from sqlalchemy import update

from mas import Agent, Message, Runtime, Settings
from mas.api.schemas import TaskStatus
from mas.api.state import Gateway
from mas.persistence.models import tasks
from mas.testing import eventually
from tests.unit.api.conftest import TokenFactory

pytestmark = pytest.mark.anyio


async def test_the_page_is_served_without_a_token_and_holds_no_data(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/dashboard/events" in response.text
    assert "trouble" not in response.text  # agent names come from the data call only


async def test_the_status_filter_offers_every_task_status(client: httpx.AsyncClient) -> None:
    page = (await client.get("/dashboard")).text
    select = re.search(r'<select name="status">(.*?)</select>', page, flags=re.DOTALL)
    assert select is not None
    offered = re.findall(r"<option(?: value=\"\")?>([^<]*)</option>", select.group(1))
    assert offered == ["any", *get_args(TaskStatus)]


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


def snapshots(body: str) -> list[dict[str, Any]]:
    """The `snapshot` events of a dashboard event stream (comment lines skipped)."""
    found = []
    for block in body.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if lines:
            fields = dict(line.split(": ", 1) for line in lines)
            assert fields["event"] == "snapshot", block
            found.append(json.loads(fields["data"]))
    return found


async def test_the_event_stream_carries_the_cluster_picture(
    client: httpx.AsyncClient, token: TokenFactory, gw: Gateway
) -> None:
    created = await client.post("/tasks/", json={"type": "echo"}, headers=token())
    await client.get(f"/tasks/{created.json()['id']}?wait=5", headers=token())
    response = await client.get("/dashboard/events", params={"timeout": 0.5}, headers=token())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    [picture] = snapshots(response.text)  # nothing changed: one snapshot, then the end
    node = gw.runtime.node_id
    [seen] = picture["nodes"]
    assert seen | {"supervision": None} == {
        "node_id": node,
        "agents": 2,
        "live": 2,
        "last_heartbeat": seen["last_heartbeat"],
        "supervision": None,
    }
    echo = next(t for t in picture["types"] if t["type"] == "echo")
    assert echo | {"broker": 0} == {
        "type": "echo",
        "live": 1,
        "here": 1,
        "mailbox": 0,
        "broker": 0,
        "handled": 1,
        "failed": 0,
        "restarts": 0,
    }
    root = picture["supervision"]
    assert (root["id"], root["strategy"]) == ("root", "one_for_one")
    assert {child["id"]: child["type"] for child in root["children"]} == {
        "echo": "echo",
        "trouble": "trouble",
    }
    assert picture["version"]


@pytest.mark.parametrize("timeout", ["0", "3601", "soon"])
async def test_the_event_stream_refuses_a_bad_timeout(
    client: httpx.AsyncClient, token: TokenFactory, timeout: str, problem: Callable[..., Any]
) -> None:
    response = await client.get("/dashboard/events", params={"timeout": timeout}, headers=token())
    problem(response, 422)


async def test_the_event_stream_needs_both_read_scopes(
    client: httpx.AsyncClient, token: TokenFactory, problem: Callable[..., Any]
) -> None:
    problem(await client.get("/dashboard/events", headers=token("agents:read")), 403)


class Fragile(Agent):
    type = "fragile"

    async def handle_message(self, message: Message) -> None:
        raise RuntimeError("crash (test)")


async def test_every_nodes_supervision_tree_and_restarts_come_from_its_records(
    client: httpx.AsyncClient, token: TokenFactory, settings: Settings
) -> None:
    # Another node (a worker) sharing the database: the gateway knows it by its records only.
    persisting = settings.model_copy(update={"persist": True})
    async with Runtime(persisting, node_id="worker-2") as worker:
        team = await worker.spawn_supervisor("team")
        fragile = await team.spawn(Fragile, id="fragile", max_attempts=1)
        await worker.spawn(Fragile, id="steady")
        await fragile.tell(Message("crash", {}))
        journal = worker.journal
        assert journal is not None

        async def restarted() -> bool:
            await journal.flush()
            records = await journal.store.list_agents(limit=10)
            return any(r.id == "fragile" and r.metadata.get("restarts") == 1 for r in records)

        await eventually(restarted, timeout=30)
        data = (await client.get("/dashboard/data", headers=token())).json()
    nodes = {node["node_id"]: node for node in data["nodes"]}
    tree = nodes["worker-2"]["supervision"]
    assert tree["id"] == "root"
    [team_node, steady] = tree["children"]
    assert steady == {
        "id": "steady",
        "type": "fragile",
        "status": "running",
        "live": True,
        "restarts": 0,
    }
    assert team_node["id"] == "team"
    assert [(c["id"], c["restarts"], c["status"]) for c in team_node["children"]] == [
        ("fragile", 1, "running")
    ]
