"""Tasks belong to whoever submitted them (issue 13, findings 3 and 10).

A caller sees, waits on, streams and cancels its own tasks; `tasks:admin` sees everyone's.
Another caller's task is as unknown as a missing one (404: not even its existence shows), an
id another caller used is taken (409, nothing of that task shown), and an id reused by the
same caller for a different request is refused (422) instead of silently returning the old
task.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from mas.api.auth import mint_token
from tests.unit.api.conftest import SECRET

pytestmark = pytest.mark.anyio

CALLER = ["tasks:read", "tasks:write", "agents:read"]


def as_(subject: str, *extra: str) -> dict[str, str]:
    # Minted when the module is imported: valid for the whole run, however long it takes.
    token = mint_token(SECRET, subject, [*CALLER, *extra], ttl=86_400)
    return {"Authorization": f"Bearer {token}"}


ALICE, BOB, ADMIN = as_("alice"), as_("bob"), as_("ops", "tasks:admin")


async def submit(client: httpx.AsyncClient, who: dict[str, str], **body: Any) -> httpx.Response:
    if "agent" not in body:
        body["type"] = "echo"
    return await client.post("/tasks/", json=body, headers=who)


async def test_a_caller_sees_only_its_own_tasks_and_an_admin_sees_all(
    client: httpx.AsyncClient, problem: Any
) -> None:
    alice = (await submit(client, ALICE, payload={"secret": "a"})).json()["id"]
    bob = (await submit(client, BOB, payload={"secret": "b"})).json()["id"]
    listed = {
        name: {t["id"] for t in (await client.get("/tasks/", headers=who)).json()["items"]}
        for name, who in (("alice", ALICE), ("bob", BOB), ("ops", ADMIN))
    }
    assert listed == {"alice": {alice}, "bob": {bob}, "ops": {alice, bob}}
    for path in (f"/tasks/{alice}", f"/tasks/{alice}?wait=1", f"/tasks/{alice}/events"):
        problem(await client.get(path, headers=BOB), 404, alice)
    assert (await client.get(f"/tasks/{alice}", headers=ADMIN)).json()["payload"] == {"secret": "a"}
    dashboard = (await client.get("/dashboard/data", headers=BOB)).json()
    assert [t["id"] for t in dashboard["tasks"]] == [bob]
    assert sum(dashboard["task_counts"].values()) == 1


async def test_a_caller_cannot_cancel_another_callers_task(
    client: httpx.AsyncClient, problem: Any, trouble: Any
) -> None:
    slow = await submit(client, ALICE, agent="trouble", message_type="slow")
    task_id = slow.json()["id"]
    problem(await client.post(f"/tasks/{task_id}/cancel", headers=BOB), 404)
    assert (await client.get(f"/tasks/{task_id}", headers=ALICE)).json()["status"] != "cancelled"
    cancelled = await client.post(f"/tasks/{task_id}/cancel", headers=ALICE)
    assert cancelled.json()["status"] == "cancelled", cancelled.text


@pytest.mark.parametrize("how", ["header", "body"])
async def test_an_id_another_caller_used_is_taken_and_shows_nothing_of_their_task(
    client: httpx.AsyncClient, problem: Any, how: str
) -> None:
    def keyed(who: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
        if how == "header":
            return {"payload": {"secret": "a"}}, {**who, "Idempotency-Key": "order-1"}
        return {"payload": {"secret": "a"}, "id": "order-1"}, who

    body, headers = keyed(ALICE)
    assert (await submit(client, headers, **body)).status_code == 202
    body, headers = keyed(BOB)
    taken = await submit(client, headers, **body)
    detail = problem(taken, 409, "order-1")["detail"]
    assert "secret" not in taken.text and "alice" not in detail


async def test_an_id_reused_for_a_different_request_is_422_not_the_old_task(
    client: httpx.AsyncClient, problem: Any
) -> None:
    keyed = {**ALICE, "Idempotency-Key": "order-2"}
    first = await submit(
        client,
        keyed,
        payload={"n": 1},
    )
    assert first.status_code == 202, first.text
    repeat = await submit(client, keyed, payload={"n": 1})
    assert (repeat.status_code, repeat.json()["id"]) == (200, "order-2")
    problem(await submit(client, keyed, payload={"n": 2}), 422, "order-2", "different request")
    problem(
        await client.post("/tasks/", json={"agent": "echo", "payload": {"n": 1}}, headers=keyed),
        422,
    )


async def test_a_message_id_another_caller_chose_never_returns_their_reply(
    client: httpx.AsyncClient,
) -> None:
    """Finding 4: the agent remembers the reply to a message id and sends it again to a
    duplicate; a client's id is its own, so another caller's same id is another message."""
    senders = {
        name: as_(name, "messages:write")  # tasks scopes too, harmlessly
        for name in ("alice", "bob")
    }
    replies = {}
    for name, payload in (("alice", {"secret": "a"}), ("bob", {"hello": "b"})):
        response = await client.post(
            "/agents/echo/message",
            params={"wait": 5},
            json={"type": "ping", "id": "m-1", "payload": payload},
            headers=senders[name],
        )
        assert response.status_code == 200, response.text
        replies[name] = response.json()["payload"]
    assert replies == {"alice": {"secret": "a"}, "bob": {"hello": "b"}}
