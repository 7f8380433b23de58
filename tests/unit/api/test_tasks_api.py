"""/tasks: submit, read (and wait), list, cancel — through the real app, runtime and store."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any, ClassVar

import anyio
import httpx
import pytest

from mas import Agent, HandlerResult, Message, TaskResult
from mas.api.auth import mint_token
from mas.api.state import Gateway
from mas.config import ApiSettings
from mas.persistence.models import messages
from mas.persistence.store import TRACE_LIMIT, message_row
from mas.testing import eventually
from tests.unit.api.conftest import SECRET

pytestmark = pytest.mark.anyio

Problem = Callable[..., dict[str, Any]]


class PatientBlocker(Agent):
    """A one-slot mailbox with the default policy (a full mailbox makes senders wait); its
    handler holds the first message until the test's `release` is set."""

    type = "patient"
    mailbox_capacity = 1
    started: ClassVar[asyncio.Event]
    release: ClassVar[asyncio.Event]

    async def handle_message(self, message: Message) -> HandlerResult:
        type(self).started.set()
        await type(self).release.wait()
        return None


async def submit(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]], body: Any, **headers: str
) -> httpx.Response:
    return await client.post("/tasks/", json=body, headers={**token(), **headers})


async def finished(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]], task_id: str
) -> dict[str, Any]:
    response = await client.get(f"/tasks/{task_id}", params={"wait": 5}, headers=token())
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()
    assert task["status"] not in ("pending", "running"), task
    return task


class TestSubmit:
    async def test_echo_task_is_accepted_then_succeeds_with_the_result(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        response = await submit(client, token, {"type": "echo", "payload": {"text": "hi"}})
        assert response.status_code == 202, response.text
        task = response.json()
        assert task["id"]
        assert response.headers["location"] == f"/tasks/{task['id']}"
        assert task["status"] in ("pending", "running", "succeeded")
        assert task["target"] == "type:echo"
        assert task["created_by"] == "tester"
        done = await finished(client, token, task["id"])
        assert done["status"] == "succeeded"
        assert done["result"] == {"text": "hi"}
        assert done["error"] is None
        assert done["finished_at"] is not None

    @pytest.mark.parametrize(
        ("body", "target"),
        [
            ({"agent": "echo"}, "agent:echo"),
            ({"capability": "echo"}, "type:echo"),
            ({"capability": "trouble", "message_type": "count"}, "type:trouble"),
            ({"capability": "telepathy", "type": "echo"}, "type:echo"),  # the fallback
        ],
    )
    async def test_agent_and_capability_route_too(
        self, client: httpx.AsyncClient, token: Any, body: dict[str, Any], target: str
    ) -> None:
        response = await submit(client, token, {**body, "payload": {"n": 1}})
        assert response.status_code == 202, response.text
        assert response.json()["target"] == target
        assert (await finished(client, token, response.json()["id"]))["status"] == "succeeded"

    async def test_a_repeated_capability_task_gets_its_task_when_nobody_offers_it_now(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway
    ) -> None:
        """A retry is the same request: it gets the task it was, as for any other target,
        even once no agent offers the capability any more (it is resolved only once)."""
        body = {"capability": "echo", "id": "cap-1", "payload": {"n": 1}}
        first = await client.post("/tasks/", json=body, params={"wait": 5}, headers=token())
        assert (first.status_code, first.json()["status"]) == (200, "succeeded"), first.text
        await gw.runtime.stop_agent("echo")
        await gw.runtime.settle()  # the agents table says echo stopped: nobody offers echo
        fresh = await submit(client, token, {"capability": "echo"})
        assert fresh.status_code == 404, fresh.text
        again = await submit(client, token, body)
        assert again.status_code == 200, again.text
        assert (again.json()["id"], again.json()["target"]) == ("cap-1", "type:echo")
        changed = await submit(client, token, {**body, "payload": {"n": 2}})
        assert changed.status_code == 422, changed.text

    async def test_response_carries_a_trace_id_that_the_task_keeps(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        response = await submit(client, token, {"type": "echo"})
        trace_id = response.headers["x-trace-id"]
        assert len(trace_id) == 32
        assert (await finished(client, token, response.json()["id"]))["trace_id"] == trace_id

    async def test_traceparent_becomes_the_task_trace_id(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        response = await submit(
            client, token, {"type": "echo"}, traceparent=f"00-{trace}-00f067aa0ba902b7-01"
        )
        assert response.headers["x-trace-id"] == trace
        assert response.json()["trace_id"] == trace
        assert (await finished(client, token, response.json()["id"]))["trace_id"] == trace

    async def test_x_trace_id_becomes_the_task_trace_id(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        response = await submit(client, token, {"type": "echo"}, **{"X-Trace-Id": "abc"})
        assert response.headers["x-trace-id"] == "abc"
        assert response.json()["trace_id"] == "abc"

    async def test_invalid_trace_headers_start_a_new_trace(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        response = await submit(
            client, token, {"type": "echo"}, traceparent="00-" + "0" * 32 + "-" + "1" * 16 + "-01"
        )
        assert response.headers["x-trace-id"] != "0" * 32
        assert response.json()["trace_id"] == response.headers["x-trace-id"]


class TestSubmitRefusals:
    async def test_unknown_capability_is_404(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await submit(client, token, {"capability": "telepathy"})
        problem(response, 404, "telepathy")

    @pytest.mark.parametrize(
        ("body", "named"),
        [
            ({"payload": {}}, "got none"),
            ({"agent": "echo", "type": "echo"}, "got agent, type"),
            ({"agent": "echo", "capability": "echo"}, "got agent, capability"),
        ],
    )
    async def test_exactly_one_destination_is_required(
        self,
        client: httpx.AsyncClient,
        token: Any,
        problem: Problem,
        body: dict[str, Any],
        named: str,
    ) -> None:
        response = await submit(client, token, body)
        problem(response, 422, "exactly one of 'agent', 'type' or 'capability'", named)

    async def test_unknown_field_is_422_naming_it(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await submit(client, token, {"type": "echo", "priority": 5})
        body = problem(response, 422, "priority")
        assert body["errors"][0]["field"] == "body.priority"

    @pytest.mark.parametrize("payload", [[1, 2], "text", 3, None])
    async def test_payload_must_be_an_object(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, payload: Any
    ) -> None:
        response = await submit(client, token, {"type": "echo", "payload": payload})
        problem(response, 422, "body.payload")

    async def test_body_over_the_cap_is_413(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, gw: Gateway
    ) -> None:
        response = await submit(client, token, {"type": "echo", "payload": {"x": "y" * 5000}})
        problem(response, 413, "2048", "MAS_MESSAGE_MAX_BYTES")
        assert await gw.store.list_tasks() == []

    async def test_chunked_body_over_the_cap_is_413_too(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, gw: Gateway
    ) -> None:
        body = b'{"type": "echo", "payload": {"x": "' + b"y" * 5000 + b'"}}'

        async def chunks() -> Any:  # no Content-Length: the middleware cannot see the size
            for start in range(0, len(body), 1000):
                yield body[start : start + 1000]

        response = await client.post(
            "/tasks/", content=chunks(), headers={**token(), "Content-Type": "application/json"}
        )
        problem(response, 413)
        assert await gw.store.list_tasks() == []

    @pytest.mark.parametrize(
        "content", [b'{"type": ', b"not json", b"", b'{"type": "echo"}}', b"\xff\xfe"]
    )
    async def test_malformed_json_is_422_never_500(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, content: bytes
    ) -> None:
        response = await client.post(
            "/tasks/", content=content, headers={**token(), "Content-Type": "application/json"}
        )
        problem(response, 422)

    @pytest.mark.parametrize("body", [{"agent": "nobody"}, {"type": "nosuch"}])
    async def test_unknown_target_is_404_and_nothing_is_stored(
        self,
        client: httpx.AsyncClient,
        token: Any,
        problem: Problem,
        gw: Gateway,
        body: dict[str, Any],
    ) -> None:
        """A typo is the client's mistake: no failed task, no dead letter, for each one."""
        response = await submit(client, token, {**body, "id": "lost-task"})
        problem(response, 404, next(iter(body.values())))
        problem(await client.get("/tasks/lost-task", headers=token()), 404)
        assert await gw.store.list_tasks() == []
        assert gw.runtime.dead_letters.count == 0


class TestIdempotency:
    async def test_same_idempotency_key_returns_the_same_task_and_runs_once(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        body = {"agent": "trouble", "message_type": "count"}
        first = await submit(client, token, body, **{"Idempotency-Key": "key-1"})
        assert first.status_code == 202
        assert (await finished(client, token, "key-1"))["status"] == "succeeded"
        second = await submit(client, token, body, **{"Idempotency-Key": "key-1"})
        assert second.status_code == 200, second.text
        assert second.json()["id"] == first.json()["id"] == "key-1"
        assert second.json()["status"] == "succeeded"
        assert second.headers["location"] == "/tasks/key-1"
        await gw.runtime.settle()
        assert trouble.calls["count"] == 1

    async def test_repeat_while_in_flight_does_not_run_the_handler_again(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        body = {"agent": "trouble", "message_type": "slow"}
        first = await submit(client, token, body, **{"Idempotency-Key": "key-2"})
        assert first.status_code == 202
        await trouble.started.wait()
        second = await submit(client, token, body, **{"Idempotency-Key": "key-2"})
        assert second.status_code == 200
        assert second.json()["id"] == "key-2"
        trouble.release.set()
        done = await finished(client, token, "key-2")
        assert done["status"] == "succeeded"
        await gw.runtime.settle()
        assert trouble.calls["slow"] == 1

    async def test_same_body_id_returns_the_same_task(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        body = {"agent": "trouble", "message_type": "count", "id": "order-7"}
        first = await submit(client, token, body)
        assert first.status_code == 202
        assert first.json()["id"] == "order-7"
        await finished(client, token, "order-7")
        second = await submit(client, token, body)
        assert second.status_code == 200
        assert second.json()["id"] == "order-7"
        await gw.runtime.settle()
        assert trouble.calls["count"] == 1

    @pytest.mark.parametrize("key", ["a b/c", "k/1", "../x"])
    async def test_unusable_idempotency_key_is_refused_or_still_reachable(
        self, client: httpx.AsyncClient, token: Any, key: str
    ) -> None:
        response = await client.post(
            "/tasks/", json={"type": "echo"}, headers={**token(), "Idempotency-Key": key}
        )
        if response.status_code == 422:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert "idempotency" in response.json()["detail"].lower()
            return
        assert response.status_code == 202
        location = await client.get(response.headers["location"], headers=token())
        assert location.status_code == 200, location.text
        assert location.json()["id"] == response.json()["id"]

    async def test_different_keys_make_different_tasks(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        first = await submit(client, token, {"type": "echo"}, **{"Idempotency-Key": "a"})
        second = await submit(client, token, {"type": "echo"}, **{"Idempotency-Key": "b"})
        assert (first.status_code, second.status_code) == (202, 202)
        assert first.json()["id"] != second.json()["id"]


class TestFailures:
    async def test_crashing_handler_ends_dead_lettered_with_the_error(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        response = await submit(client, token, {"agent": "trouble", "message_type": "boom"})
        assert response.status_code == 202
        task = await finished(client, token, response.json()["id"])
        assert task["status"] == "dead_lettered"
        assert task["error"]["type"] == "RuntimeError"
        assert "boom requested" in task["error"]["message"]
        assert task["result"] is None
        await gw.runtime.settle()
        assert trouble.calls["boom"] == trouble.max_attempts

        listed = await client.get("/tasks/", params={"status": "dead_lettered"}, headers=token())
        assert listed.status_code == 200
        assert [t["id"] for t in listed.json()["items"]] == [task["id"]]
        succeeded = await client.get("/tasks/", params={"status": "succeeded"}, headers=token())
        assert succeeded.json()["items"] == []


class TestList:
    async def test_pagination_newest_first(self, client: httpx.AsyncClient, token: Any) -> None:
        ids = []
        for n in range(3):
            response = await submit(client, token, {"type": "echo", "id": f"t{n}"})
            ids.append(response.json()["id"])
            await finished(client, token, ids[-1])
        first = await client.get("/tasks/", params={"limit": 2}, headers=token())
        assert first.status_code == 200
        page = first.json()
        assert (page["limit"], page["offset"]) == (2, 0)
        assert [t["id"] for t in page["items"]] == ["t2", "t1"]
        rest = await client.get("/tasks/", params={"limit": 2, "offset": 2}, headers=token())
        assert [t["id"] for t in rest.json()["items"]] == ["t0"]
        by_type = await client.get("/tasks/", params={"type": "nothing"}, headers=token())
        assert by_type.json()["items"] == []

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 501}, "limit"),
            ({"offset": -1}, "offset"),
            ({"status": "sleeping"}, "status"),
            ({"limit": "many"}, "limit"),
        ],
    )
    async def test_bad_query_is_422_naming_the_parameter(
        self,
        client: httpx.AsyncClient,
        token: Any,
        problem: Problem,
        params: dict[str, Any],
        field: str,
    ) -> None:
        response = await client.get("/tasks/", params=params, headers=token())
        problem(response, 422, field)


class TestGet:
    async def test_unknown_task_is_404(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        problem(await client.get("/tasks/nope", headers=token()), 404, "'nope'")

    async def test_unknown_task_with_wait_is_404_at_once(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await client.get("/tasks/nope", params={"wait": 30}, headers=token())
        problem(response, 404, "'nope'")

    @pytest.mark.parametrize("wait", ["-1", "3601", "soon", "nan"])
    async def test_bad_wait_is_422(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, wait: str
    ) -> None:
        response = await client.get("/tasks/x", params={"wait": wait}, headers=token())
        problem(response, 422, "wait")

    async def test_wait_returns_the_running_task_when_time_runs_out(
        self, client: httpx.AsyncClient, token: Any, trouble: Any
    ) -> None:
        response = await submit(client, token, {"agent": "trouble", "message_type": "slow"})
        await trouble.started.wait()
        task_id = response.json()["id"]
        waited = await client.get(f"/tasks/{task_id}", params={"wait": 0.1}, headers=token())
        assert waited.status_code == 200
        assert waited.json()["status"] in ("pending", "running")


class TestSubmitAndWait:
    async def test_submit_with_wait_returns_the_finished_task_in_one_request(
        self, client: httpx.AsyncClient, token: Any
    ) -> None:
        response = await client.post(
            "/tasks/",
            params={"wait": 5},
            json={"type": "echo", "payload": {"text": "one trip"}},
            headers=token(),
        )
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "succeeded"
        assert response.json()["result"] == {"text": "one trip"}
        assert response.headers["location"] == f"/tasks/{response.json()['id']}"

    async def test_submit_with_wait_answers_202_with_the_task_when_time_runs_out(
        self, client: httpx.AsyncClient, token: Any, trouble: Any
    ) -> None:
        response = await client.post(
            "/tasks/",
            params={"wait": 0.1},
            json={"agent": "trouble", "message_type": "slow"},
            headers=token(),
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] in ("pending", "running")
        trouble.release.set()
        assert (await finished(client, token, response.json()["id"]))["status"] == "succeeded"


def _forced_through_fastapi() -> None:
    """A dependency override no route uses: it sends the hand-read routes to FastAPI."""


JSON_TYPE = {"content-type": "application/json"}
ECHO = b'{"type": "echo", "payload": {"text": "hi"}}'
SUBMISSIONS = {
    "valid": (ECHO, JSON_TYPE, {"wait": "5"}),
    "valid, keyed": (ECHO, {**JSON_TYPE, "Idempotency-Key": "key-{path}"}, {"wait": "5"}),
    "valid, no wait": (ECHO, JSON_TYPE, {}),
    "not JSON": (b'{"type": "echo"', JSON_TYPE, {}),
    "JSON, not an object": (b"[1, 2]", JSON_TYPE, {}),
    "JSON nested too deep": (b"[" * 1020 + b"]" * 1020, JSON_TYPE, {}),  # under MAX_BYTES
    "payload nested too deep": (
        b'{"type":"echo","payload":{"a":' + b"[" * 990 + b"]" * 990 + b"}}",
        JSON_TYPE,
        {},
    ),
    "no content type": (ECHO, {}, {}),
    "another content type": (ECHO, {"content-type": "text/plain"}, {}),
    "unknown field": (b'{"type": "echo", "bogus": 1}', JSON_TYPE, {}),
    "two destinations": (b'{"type": "echo", "agent": "echo"}', JSON_TYPE, {}),
    "bad key": (ECHO, {**JSON_TYPE, "Idempotency-Key": "no spaces"}, {}),
    "negative wait": (ECHO, JSON_TYPE, {"wait": "-1"}),
    "wait not a number": (ECHO, JSON_TYPE, {"wait": "soon"}),
    "unknown capability": (b'{"capability": "nobody"}', JSON_TYPE, {}),
}
VARYING = ("id", "created_at", "started_at", "finished_at", "trace_id")


async def both_ways(app: Any, send: Callable[[str], Any]) -> list[tuple[int, str, Any]]:
    """`send(path)` read by hand, then by FastAPI: (status, content type, body without ids)."""
    answers = []
    for path in ("by-hand", "fastapi"):
        if path == "fastapi":
            app.dependency_overrides[_forced_through_fastapi] = _forced_through_fastapi
        response = await send(path)
        body = response.json()
        for field in VARYING:
            if isinstance(body, dict):
                body.pop(field, None)
        answers.append((response.status_code, response.headers["content-type"], body))
    app.dependency_overrides.clear()
    return answers


SCOPES = pytest.mark.parametrize(
    "scopes", [(), ("tasks:read",), None], ids=["all scopes", "read only", "no token"]
)


class TestReadByHand:
    """POST /tasks/ and GET /tasks/{id} read a well-formed request themselves: they must
    answer exactly as FastAPI does, for every request."""

    @pytest.mark.parametrize("case", list(SUBMISSIONS))
    @SCOPES
    async def test_every_submission_is_answered_as_fastapi_answers_it(
        self, app: Any, client: httpx.AsyncClient, token: Any, case: str, scopes: Any
    ) -> None:
        content, headers, params = SUBMISSIONS[case]

        async def send(path: str) -> httpx.Response:
            sent = {k: v.format(path=path) for k, v in headers.items()}
            if scopes is not None:
                sent.update(token(*scopes))
            return await client.post("/tasks/", content=content, headers=sent, params=params)

        answers = await both_ways(app, send)
        assert answers[0] == answers[1]
        if scopes == () and case.startswith("valid"):
            assert answers[0][0] in (200, 202)  # the comparison covered an accepted task

    @pytest.mark.parametrize(
        ("task", "params", "status"),
        [
            ("known", {}, 200),
            ("known", {"wait": "5"}, 200),
            ("known", {"wait": "-1"}, 422),
            ("known", {"wait": "soon"}, 422),
            ("unknown", {}, 404),
            ("unknown", {"wait": "0.1"}, 404),
        ],
    )
    @pytest.mark.parametrize(
        "scopes", [(), ("tasks:write",), None], ids=["all scopes", "write only", "no token"]
    )
    async def test_every_read_is_answered_as_fastapi_answers_it(
        self,
        app: Any,
        client: httpx.AsyncClient,
        token: Any,
        task: str,
        params: dict[str, str],
        status: int,
        scopes: Any,
    ) -> None:
        created = await submit(client, token, {"type": "echo", "payload": {"n": 1}})
        await finished(client, token, created.json()["id"])  # no change between the reads
        task_id = created.json()["id"] if task == "known" else "no-such-task"
        headers = token(*scopes) if scopes is not None else {}

        async def send(path: str) -> httpx.Response:
            return await client.get(f"/tasks/{task_id}", params=params, headers=headers)

        answers = await both_ways(app, send)
        assert answers[0] == answers[1]
        if scopes == ():
            assert answers[0][0] == status


class TestNewTasks:
    """A task under a fresh id is created in the journal's batch and answered from its commit."""

    @pytest.mark.parametrize(
        ("body", "status"),
        [
            ({"type": "echo", "payload": {"text": "hi"}}, "succeeded"),
            ({"agent": "trouble", "message_type": "boom"}, "dead_lettered"),
        ],
    )
    async def test_the_answer_is_what_the_store_holds(
        self, client: httpx.AsyncClient, token: Any, body: dict[str, Any], status: str
    ) -> None:
        answered = await client.post("/tasks/", params={"wait": 5}, json=body, headers=token())
        assert answered.status_code == 200, answered.text
        assert answered.json()["status"] == status
        stored = await client.get(f"/tasks/{answered.json()['id']}", headers=token())
        assert stored.json() == answered.json()
        assert stored.json()["started_at"] is not None
        assert stored.json()["attempts"] >= 1

    async def test_an_accepted_task_is_readable_while_its_agent_works(
        self, client: httpx.AsyncClient, token: Any, trouble: Any
    ) -> None:
        accepted = await submit(client, token, {"agent": "trouble", "message_type": "slow"})
        assert accepted.status_code == 202
        await trouble.started.wait()  # the handler holds it: no end will commit for now
        stored = await client.get(f"/tasks/{accepted.json()['id']}", headers=token())
        assert stored.status_code == 200, stored.text
        assert stored.json()["status"] in ("pending", "running")
        assert stored.json()["created_by"] == "tester"

    async def test_unknown_target_stores_nothing(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        problem(await submit(client, token, {"type": "nosuch"}), 404, "nosuch")
        assert (await client.get("/tasks/", headers=token())).json()["items"] == []

    async def test_a_new_task_refused_by_a_full_mailbox_is_not_stored(
        self,
        client: httpx.AsyncClient,
        token: Any,
        problem: Problem,
        full_agent: str,
        gw: Gateway,
    ) -> None:
        problem(await submit(client, token, {"agent": full_agent}), 429, full_agent)
        # Refused before anything was stored: no task the client never saw stays pending.
        assert (await client.get("/tasks/", headers=token())).json()["items"] == []
        assert await gw.store.outbox_ids() == []

    async def test_a_full_mailbox_with_the_block_policy_is_429_at_once_not_a_wait(
        self, client: httpx.AsyncClient, token: Any, problem: Problem, gw: Gateway
    ) -> None:
        """`block` makes senders inside the runtime wait for room; an HTTP client must not
        wait without bound for it: it gets 429 and Retry-After (issue 13, item 9)."""
        PatientBlocker.started, PatientBlocker.release = asyncio.Event(), asyncio.Event()
        await gw.runtime.spawn(PatientBlocker, id="patient")
        try:
            await gw.runtime.tell("agent:patient", Message(type="a"))
            await asyncio.wait_for(PatientBlocker.started.wait(), 5)  # the handler holds it
            await gw.runtime.tell("agent:patient", Message(type="b"))  # the slot is taken
            with anyio.fail_after(5):
                refused = await submit(client, token, {"agent": "patient"})
            problem(refused, 429, "patient")
            assert int(refused.headers["Retry-After"]) >= 1
        finally:
            PatientBlocker.release.set()

    async def test_a_cancel_ends_a_waiting_submission(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        waiting = asyncio.create_task(
            client.post(
                "/tasks/",
                params={"wait": 30},
                json={"agent": "trouble", "message_type": "slow"},
                headers=token(),
            )
        )
        await trouble.started.wait()
        await gw.journal.flush()  # the start is recorded: the task can be found
        running = await client.get("/tasks/", params={"status": "running"}, headers=token())
        (task,) = running.json()["items"]
        cancelled = await client.post(f"/tasks/{task['id']}/cancel", headers=token())
        assert cancelled.status_code == 200
        # The handler is still blocked: only the cancellation can end the wait.
        answered = await asyncio.wait_for(waiting, 10)
        assert answered.status_code == 200, answered.text
        assert answered.json()["status"] == "cancelled"
        assert answered.json() == (await client.get(f"/tasks/{task['id']}", headers=token())).json()

    async def test_a_database_refusing_writes_is_503_and_the_task_is_kept(
        self, make_app: Any, serve: Any, token: Any, problem: Problem
    ) -> None:
        app = make_app(api=ApiSettings(write_timeout=0.3))
        async with serve(app) as client:
            gw: Gateway = app.state.gateway
            async with gw.store.engine.begin() as conn:
                await conn.exec_driver_sql("ALTER TABLE tasks RENAME TO tasks_away")
            first = await submit(client, token, {"type": "echo", "payload": {"n": 1}})
            problem(first, 503, "did not record task", "stays queued")
            assert first.headers["retry-after"]
            match = re.search(r"task '([^']+)'", first.json()["detail"])
            assert match is not None
            # Known to be failing now: refused at once, and nothing is created.
            problem(await submit(client, token, {"type": "echo"}), 503, "not accepting writes")
            problem(await client.get("/tasks/", headers=token()), 503, "no such table")
            problem(await client.get(f"/tasks/{match[1]}", headers=token()), 503, "no such table")

            async with gw.store.engine.begin() as conn:
                await conn.exec_driver_sql("ALTER TABLE tasks_away RENAME TO tasks")
            await gw.journal.flush()  # the writer's retry commits what it kept
            kept = await client.get(f"/tasks/{match[1]}", params={"wait": 5}, headers=token())
            assert (kept.json()["status"], kept.json()["result"]) == ("succeeded", {"n": 1})
            listed = await client.get("/tasks/", headers=token())
            assert [t["id"] for t in listed.json()["items"]] == [match[1]]
            again = await submit(client, token, {"type": "echo"})
            assert again.status_code == 202, again.text


class TestCancel:
    async def test_cancelling_a_running_task_cancels_its_handler(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        response = await submit(client, token, {"agent": "trouble", "message_type": "slow"})
        task_id = response.json()["id"]
        await trouble.started.wait()
        cancelled = await client.post(f"/tasks/{task_id}/cancel", headers=token())
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        assert cancelled.json()["finished_at"] is not None
        # The handler got CancelledError at its await (nobody released it): the agent takes
        # the next task, and the cancelled message is not retried.
        nxt = await submit(client, token, {"agent": "trouble", "message_type": "count"})
        assert (await finished(client, token, nxt.json()["id"]))["status"] == "succeeded"
        assert gw.runtime.stats()["cancelled"] == 1
        assert trouble.calls["slow"] == 1
        again = await client.get(f"/tasks/{task_id}", headers=token())
        assert again.json()["status"] == "cancelled"
        assert again.json()["result"] is None

    async def test_a_handler_that_swallows_the_cancellation_leaves_the_task_cancelled(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway
    ) -> None:
        class Stubborn(Agent):
            type = "stubborn"
            started: ClassVar[asyncio.Event] = asyncio.Event()
            cancelled_seen: ClassVar[int] = 0

            async def handle_message(self, message: Message) -> HandlerResult:
                type(self).started.set()
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    type(self).cancelled_seen += 1  # and carries on regardless
                assert message.task_id is not None
                return TaskResult.succeeded(message.task_id, {"finished": True})

        await gw.runtime.spawn(Stubborn, id="stubborn")
        task_id = (await submit(client, token, {"agent": "stubborn"})).json()["id"]
        await Stubborn.started.wait()
        assert (await client.post(f"/tasks/{task_id}/cancel", headers=token())).status_code == 200
        await eventually(lambda: Stubborn.cancelled_seen == 1)
        # The runtime goes on (its own later awaits are not cancelled) and the task's
        # record keeps the cancellation.
        echoed = await submit(client, token, {"type": "echo", "payload": {"after": 1}})
        assert (await finished(client, token, echoed.json()["id"]))["status"] == "succeeded"
        assert (await client.get(f"/tasks/{task_id}", headers=token())).json()["status"] == (
            "cancelled"
        )

    async def test_pending_task_can_be_cancelled(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway, trouble: Any
    ) -> None:
        await submit(client, token, {"agent": "trouble", "message_type": "slow"})
        await trouble.started.wait()  # the agent is busy: the next task waits its turn
        queued = await submit(client, token, {"agent": "trouble", "message_type": "count"})
        assert queued.json()["status"] == "pending"
        task_id = queued.json()["id"]
        cancelled = await client.post(f"/tasks/{task_id}/cancel", headers=token())
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        trouble.release.set()
        await gw.runtime.settle()
        after = await client.get(f"/tasks/{task_id}", headers=token())
        assert after.json()["status"] == "cancelled"

    async def test_finished_task_is_409(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        response = await submit(client, token, {"type": "echo", "id": "done-task"})
        await finished(client, token, response.json()["id"])
        refused = await client.post("/tasks/done-task/cancel", headers=token())
        problem(refused, 409, "already succeeded")

    async def test_unknown_task_is_404(
        self, client: httpx.AsyncClient, token: Any, problem: Problem
    ) -> None:
        problem(await client.post("/tasks/ghost/cancel", headers=token()), 404, "'ghost'")


class Asker(Agent):
    """Asks the echo agent once (a workflow step: a child task) and ends its task with the
    answer."""

    type = "asker"

    async def handle_message(self, message: Message) -> HandlerResult:
        question = Message("question", {"asked": message.payload["q"]})
        answer = await self.ctx.ask("type:echo", question, timeout=10)
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, answer.payload)


def caller(subject: str, *scopes: str) -> dict[str, str]:
    token = mint_token(SECRET, subject, ["tasks:read", "tasks:write", *scopes], ttl=600)
    return {"Authorization": f"Bearer {token}"}


async def message_log(
    client: httpx.AsyncClient, task_id: str, headers: dict[str, str], count: int
) -> dict[str, Any]:
    """`GET /tasks/{id}/messages` once it lists `count` messages (the audit is written in
    batches, after the task's end may already be readable)."""
    answer: dict[str, Any] = {}

    async def listed() -> bool:
        nonlocal answer
        response = await client.get(f"/tasks/{task_id}/messages", headers=headers)
        assert response.status_code == 200, response.text
        answer = response.json()
        return len(answer["items"]) >= count

    await eventually(listed)
    return answer


class TestMessages:
    async def test_a_handled_tasks_trace_is_listed_oldest_first_with_its_handlers(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway
    ) -> None:
        await gw.runtime.spawn(Asker, id="asker")
        created = await submit(client, token, {"agent": "asker", "payload": {"q": "why"}})
        task = await finished(client, token, created.json()["id"])
        assert task["status"] == "succeeded", task

        log = await message_log(client, task["id"], token(), 3)
        assert (log["task_id"], log["trace_id"]) == (task["id"], task["trace_id"])
        assert (log["audited"], log["audit"], log["cut"], log["hidden"]) == (True, "all", False, 0)
        ask, question, answer = log["items"]
        assert (ask["id"], ask["type"], ask["target"]) == (task["id"], "task", "agent:asker")
        assert (ask["handled_by"], ask["task_id"], ask["payload"]) == (
            "asker",
            task["id"],
            {"q": "why"},
        )
        assert (question["type"], question["sender"], question["target"]) == (
            "question",
            "agent:asker",
            "type:echo",
        )
        assert question["handled_by"] == "echo"
        assert question["payload"] == {"asked": "why"}
        child = (await client.get("/tasks/", params={"parent": task["id"]}, headers=token())).json()
        assert question["task_id"] == child["items"][0]["id"]  # the ask is a child task
        assert answer["correlation_id"] == question["id"]
        assert answer["payload"] == {"asked": "why"}
        times = [m["created_at"] for m in log["items"]]
        assert times == sorted(times)

    async def test_another_callers_task_and_an_unknown_one_are_404(
        self, client: httpx.AsyncClient, problem: Problem
    ) -> None:
        alice, bob = caller("alice"), caller("bob")
        created = await client.post("/tasks/", json={"type": "echo"}, headers=alice)
        task_id = created.json()["id"]
        await message_log(client, task_id, alice, 1)
        problem(await client.get(f"/tasks/{task_id}/messages", headers=bob), 404, task_id)
        problem(await client.get("/tasks/ghost/messages", headers=alice), 404, "'ghost'")
        admin = caller("ops", "tasks:admin")
        assert (await message_log(client, task_id, admin, 1))["items"][0]["id"] == task_id

    async def test_a_shared_trace_shows_a_caller_its_own_tasks_messages_only(
        self, client: httpx.AsyncClient
    ) -> None:
        # The trace id is the client's to give: bob can put a task into alice's trace.
        alice, bob = caller("alice"), caller("bob")
        trace = {"X-Trace-Id": "shared-trace"}
        body = {"type": "echo", "payload": {"secret": "alice's"}}
        mine = (await client.post("/tasks/", json=body, headers={**alice, **trace})).json()
        body = {"type": "echo", "payload": {"from": "bob"}}
        theirs = (await client.post("/tasks/", json=body, headers={**bob, **trace})).json()

        admin = await message_log(client, theirs["id"], caller("ops", "tasks:admin"), 2)
        assert {m["id"] for m in admin["items"]} == {mine["id"], theirs["id"]}
        seen_by_bob = await message_log(client, theirs["id"], bob, 1)
        assert [m["id"] for m in seen_by_bob["items"]] == [theirs["id"]]
        assert seen_by_bob["hidden"] == 1
        assert "alice's" not in json.dumps(seen_by_bob)

    async def test_a_long_trace_is_cut_at_the_oldest_and_says_so(
        self, client: httpx.AsyncClient, token: Any, gw: Gateway
    ) -> None:
        created = await submit(client, token, {"type": "echo"}, **{"X-Trace-Id": "long"})
        task = await finished(client, token, created.json()["id"])
        await message_log(client, task["id"], token(), 1)
        later = [
            message_row(
                Message("note", {"n": n}, trace_id="long", metadata={"task_id": task["id"]})
            )
            for n in range(TRACE_LIMIT)
        ]
        async with gw.store.writing() as conn:
            await conn.execute(messages.insert(), later)

        log = (await client.get(f"/tasks/{task['id']}/messages", headers=token())).json()
        assert (len(log["items"]), log["limit"], log["cut"]) == (TRACE_LIMIT, TRACE_LIMIT, True)
        assert log["items"][0]["id"] == task["id"]  # the oldest: the task's own message first
        assert [m["payload"].get("n") for m in log["items"][1:3]] == [0, 1]

    async def test_without_the_audit_the_list_is_empty_and_says_why(
        self, make_app: Callable[..., Any], serve: Callable[..., Any], token: Any
    ) -> None:
        async with serve(make_app(audit="off")) as client:
            created = await submit(client, token, {"type": "echo", "payload": {"n": 1}})
            task = await finished(client, token, created.json()["id"])
            assert task["status"] == "succeeded"
            response = await client.get(f"/tasks/{task['id']}/messages", headers=token())
            assert response.status_code == 200, response.text
            log = response.json()
            assert (log["audited"], log["audit"], log["items"]) == (False, "off", [])


ROUTES = [
    ("POST", "/tasks/", {"type": "echo"}, "tasks:write"),
    ("GET", "/tasks/", None, "tasks:read"),
    ("GET", "/tasks/some-id", None, "tasks:read"),
    ("GET", "/tasks/some-id/messages", None, "tasks:read"),
    ("POST", "/tasks/some-id/cancel", None, "tasks:write"),
]


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
async def test_every_route_needs_a_token(
    client: httpx.AsyncClient,
    problem: Problem,
    method: str,
    path: str,
    body: Any,
    scope: str,
) -> None:
    response = await client.request(method, path, json=body)
    problem(response, 401, "Authorization")
    assert response.headers["www-authenticate"] == "Bearer"


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
    from mas.api.auth import SCOPES

    others = [s for s in SCOPES if s != scope]
    response = await client.request(method, path, json=body, headers=token(*others))
    problem(response, 403, scope)
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
