"""/agents: start agents, list and look them up, send them messages (tell and ask)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from mas.agents.calc import CalcAgent
from mas.api.auth import SCOPES
from mas.api.state import Gateway

pytestmark = pytest.mark.anyio

Problem = Callable[..., dict[str, Any]]


class TestRegister:
    async def test_start_an_agent_of_a_known_type(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway
    ) -> None:
        response = await client.post("/agents/", json={"type": "echo", "id": "e2"}, headers=token())
        assert response.status_code == 201, response.text
        assert response.headers["location"] == "/agents/e2"
        agent = response.json()
        assert (agent["id"], agent["type"], agent["status"]) == ("e2", "echo", "running")
        assert agent["mailbox"] == 0
        assert gw.runtime.local_cell("e2") is not None
        # ... and it works: a task addressed to it succeeds.
        task = await client.post(
            "/tasks/", json={"agent": "e2", "payload": {"n": 2}}, headers=token()
        )
        done = await client.get(f"/tasks/{task.json()['id']}", params={"wait": 5}, headers=token())
        assert done.json()["status"] == "succeeded"
        assert done.json()["result"] == {"n": 2}

    async def test_without_id_one_is_generated(self, client: httpx.AsyncClient, token: Any) -> None:
        response = await client.post("/agents/", json={"type": "echo"}, headers=token())
        assert response.status_code == 201
        agent_id = response.json()["id"]
        assert agent_id
        assert response.headers["location"] == f"/agents/{agent_id}"

    async def test_duplicate_id_is_409(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await client.post(
            "/agents/", json={"type": "echo", "id": "echo"}, headers=token()
        )
        problem(response, 409, "echo")

    async def test_unknown_type_is_422_listing_the_known_types(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await client.post("/agents/", json={"type": "wizard"}, headers=token())
        problem(response, 422, "'wizard'", "echo", "trouble")

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body.type"),
            ({"type": "echo", "extra": 1}, "extra"),
            ({"type": "echo", "id": "has space"}, "body.id"),
            ({"type": "9lives"}, "body.type"),
        ],
    )
    async def test_invalid_body_is_422_naming_the_field(
        self,
        client: httpx.AsyncClient,
        token: Any,
        problem: Problem,
        body: dict[str, Any],
        field: str,
    ) -> None:
        problem(await client.post("/agents/", json=body, headers=token()), 422, field)


class TestList:
    async def test_lists_with_filters_and_pagination(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway
    ) -> None:
        for agent_id in ("e2", "e3"):
            created = await client.post(
                "/agents/", json={"type": "echo", "id": agent_id}, headers=token()
            )
            assert created.status_code == 201
        await gw.runtime.stop_agent("e3")
        assert gw.runtime.journal is not None
        await gw.runtime.journal.flush()

        everything = await client.get("/agents/", headers=token())
        assert everything.status_code == 200
        ids = [a["id"] for a in everything.json()["items"]]
        assert sorted(ids) == ["e2", "e3", "echo", "trouble"]

        echoes = await client.get("/agents/", params={"type": "echo"}, headers=token())
        assert sorted(a["id"] for a in echoes.json()["items"]) == ["e2", "e3", "echo"]

        running = await client.get(
            "/agents/", params={"type": "echo", "status": "running"}, headers=token()
        )
        assert sorted(a["id"] for a in running.json()["items"]) == ["e2", "echo"]

        stopped = await client.get("/agents/", params={"status": "stopped"}, headers=token())
        assert [(a["id"], a["mailbox"]) for a in stopped.json()["items"]] == [("e3", None)]

        first = await client.get("/agents/", params={"limit": 2}, headers=token())
        rest = await client.get("/agents/", params={"limit": 2, "offset": 2}, headers=token())
        assert (first.json()["limit"], rest.json()["offset"]) == (2, 2)
        paged = [a["id"] for a in first.json()["items"] + rest.json()["items"]]
        assert paged == ids

    @pytest.mark.parametrize(
        ("params", "field"), [({"limit": 0}, "limit"), ({"offset": -1}, "offset")]
    )
    async def test_bad_pagination_is_422(
        self,
        client: httpx.AsyncClient,
        token: Any,
        problem: Problem,
        params: dict[str, Any],
        field: str,
    ) -> None:
        problem(await client.get("/agents/", params=params, headers=token()), 422, field)


class TestGet:
    async def test_local_agent_includes_its_mailbox(
        self, client: httpx.AsyncClient, token: Any, trouble: Any
    ) -> None:
        await client.post("/agents/trouble/message", json={"type": "slow"}, headers=token())
        await trouble.started.wait()
        await client.post("/agents/trouble/message", json={"type": "count"}, headers=token())
        response = await client.get("/agents/trouble", headers=token())
        assert response.status_code == 200
        agent = response.json()
        assert (agent["id"], agent["type"], agent["status"]) == ("trouble", "trouble", "running")
        assert agent["mailbox"] == 1  # the second message waits behind the blocked one
        assert agent["metadata"]["capabilities"] == ["trouble"]

    async def test_unknown_agent_is_404(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        problem(await client.get("/agents/ghost", headers=token()), 404, "'ghost'")


class TestMessage:
    async def test_ask_returns_the_reply(self, client: httpx.AsyncClient, token: Any) -> None:
        response = await client.post(
            "/agents/echo/message",
            params={"wait": 2},
            json={"type": "ping", "payload": {"x": 1}},
            headers=token(),
        )
        assert response.status_code == 200, response.text
        reply = response.json()
        assert reply["payload"] == {"x": 1}
        assert reply["sender"] == "agent:echo"
        assert reply["correlation_id"]
        assert reply["trace_id"] == response.headers["x-trace-id"]

    async def test_tell_is_accepted_and_echoes_the_message(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        body = {"type": "count", "payload": {"x": 1}, "id": "m-1"}
        response = await client.post("/agents/trouble/message", json=body, headers=token())
        assert response.status_code == 202, response.text
        message = response.json()
        assert (message["type"], message["target"]) == ("count", "agent:trouble")
        assert (message["payload"], message["metadata"]) == ({"x": 1}, {"client_id": "m-1"})
        await gw.runtime.settle()
        again = await client.post("/agents/trouble/message", json=body, headers=token())
        assert again.json()["id"] == message["id"]  # a retry is the same message
        await gw.runtime.settle()
        assert trouble.calls["count"] == 1

    async def test_tell_without_id_gets_one(self, client: httpx.AsyncClient, token: Any) -> None:
        response = await client.post("/agents/echo/message", json={"type": "ping"}, headers=token())
        assert response.status_code == 202
        assert response.json()["id"]

    async def test_reply_timeout_is_504(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await client.post(
            "/agents/trouble/message", params={"wait": 0.2}, json={"type": "slow"}, headers=token()
        )
        problem(response, 504, "trouble")

    async def test_crashing_handler_on_ask_is_a_problem_naming_the_error(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        response = await client.post(
            "/agents/trouble/message", params={"wait": 5}, json={"type": "boom"}, headers=token()
        )
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.status_code != 500
        assert "boom requested" in response.json()["detail"]

    async def test_crashing_handler_on_ask_is_not_blamed_on_the_client(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await client.post(
            "/agents/trouble/message", params={"wait": 5}, json={"type": "boom"}, headers=token()
        )
        problem(response, 502, "RuntimeError", "boom requested")

    @pytest.mark.parametrize("wait", [None, 1])
    async def test_unknown_agent_is_404(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, wait: float | None
    ) -> None:
        params = {"wait": wait} if wait is not None else {}
        response = await client.post(
            "/agents/ghost/message", params=params, json={"type": "ping"}, headers=token()
        )
        problem(response, 404, "ghost")

    async def test_invalid_agent_id_in_path_is_422(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await client.post("/agents/-bad/message", json={"type": "ping"}, headers=token())
        problem(response, 422, "agent_id")  # the pattern is in the OpenAPI document too

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({}, "body.type"),
            ({"type": "ping", "payload": [1]}, "body.payload"),
            ({"type": ""}, "type"),
        ],
    )
    async def test_invalid_message_is_422(
        self,
        client: httpx.AsyncClient,
        token: Any,
        problem: Problem,
        body: dict[str, Any],
        field: str,
    ) -> None:
        response = await client.post("/agents/echo/message", json=body, headers=token())
        problem(response, 422, field)

    async def test_a_message_the_agent_rejects_is_422_with_its_reason(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, gw: Gateway
    ) -> None:
        # The agent refused the message as the sender's mistake: the sender must change it
        # (a 4xx), and nothing was retried.
        await gw.runtime.spawn(CalcAgent, id="calc")
        body = {"type": "calc", "payload": {"expression": "1 / 0"}}
        refused = await client.post("/agents/calc/message?wait=5", json=body, headers=token())
        problem(refused, 422, "agent 'calc' rejected the message: CalcError: '1 / 0' divides")
        assert gw.runtime.restarts == 0

    async def test_full_mailbox_is_429_with_retry_after(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, full_agent: str
    ) -> None:
        path = f"/agents/{full_agent}/message"
        refused = await client.post(path, json={"type": "c"}, headers=token())
        problem(refused, 429, full_agent)
        assert int(refused.headers["retry-after"]) >= 1

    async def test_full_mailbox_on_task_submit_is_429_and_nothing_is_stored(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, full_agent: str
    ) -> None:
        """429 means "not accepted": the client's retry (same key) is the first submission."""
        body = {"agent": full_agent, "id": "retry-me"}
        refused = await client.post("/tasks/", json=body, headers=token())
        problem(refused, 429)
        assert refused.headers["retry-after"]
        stored = await client.get("/tasks/retry-me", headers=token())
        problem(stored, 404)
        fresh = await client.post("/tasks/", json={"agent": full_agent}, headers=token())
        problem(fresh, 429)
        listed = await client.get("/tasks/", headers=token())
        assert listed.json()["items"] == []


ROUTES = [
    ("POST", "/agents/", {"type": "echo"}, "agents:admin"),
    ("GET", "/agents/", None, "agents:read"),
    ("GET", "/agents/echo", None, "agents:read"),
    ("POST", "/agents/echo/message", {"type": "ping"}, "messages:write"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
async def test_every_route_needs_a_token(
    client: httpx.AsyncClient, problem: Problem, method: str, path: str, body: Any, scope: str
) -> None:
    response = await client.request(method, path, json=body)
    problem(response, 401, "Authorization")


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
async def test_every_route_needs_its_scope(
    client: httpx.AsyncClient,
    token: Any,
    problem: Problem,
    method: str,
    path: str,
    body: Any,
    scope: str,
) -> None:
    others = [s for s in SCOPES if s != scope]
    response = await client.request(method, path, json=body, headers=token(*others))
    problem(response, 403, scope)
