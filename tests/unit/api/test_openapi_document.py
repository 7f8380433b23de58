"""The OpenAPI document states what the gateway does: who needs a token, every error's
status and problem+json body, the longest `?wait=`, the one-destination rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mas.api.problems import PROBLEM_JSON
from mas.config import ApiSettings, AuthSettings
from tests.unit.api.conftest import SECRET, TokenFactory

pytestmark = pytest.mark.anyio

jsonschema_rs = pytest.importorskip("jsonschema_rs")  # schemathesis's validator

Document = dict[str, Any]


@pytest.fixture
async def document(client: httpx.AsyncClient) -> Document:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: Document = response.json()
    return body


def _operations(document: Document) -> list[tuple[str, str, Document]]:
    return [
        (path, method, operation)
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    ]


async def test_public_health_routes_declare_no_token(document: Document) -> None:
    for path in ("/livez", "/readyz", "/metrics"):
        assert "security" not in document["paths"][path]["get"], path
    assert list(document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain"
    ]
    assert "503" in document["paths"]["/readyz"]["get"]["responses"]


async def test_private_health_routes_declare_the_token_they_need(
    make_app: Callable[..., FastAPI], serve: Any
) -> None:
    from pydantic import SecretStr

    auth = AuthSettings(jwt_secret=SecretStr(SECRET), public_health=False, public_metrics=False)
    async with serve(make_app(auth=auth)) as client:
        document = (await client.get("/openapi.json")).json()
        for path in ("/livez", "/readyz", "/metrics"):
            operation = document["paths"][path]["get"]
            assert operation["security"] == [{"bearer": []}], path
            assert {"401", "403"} <= operation["responses"].keys()
        assert (await client.get("/livez")).status_code == 401  # as documented


async def test_every_error_a_route_may_answer_is_documented_as_problem_json(
    document: Document,
) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"title", "status", "detail", "instance"}
    for path, method, operation in _operations(document):
        errors = {code: r for code, r in operation["responses"].items() if code >= "400"}
        if "security" in operation:
            assert {"401", "403"} <= errors.keys(), (method, path)
        for code, response in errors.items():
            if (path, code) == ("/readyz", "503"):
                continue  # not ready: the checks, as JSON
            assert list(response["content"]) == [PROBLEM_JSON], (method, path, code)
    responses = document["paths"]["/tasks/"]["post"]["responses"]
    assert {"404", "409", "413", "422", "429", "503"} <= responses.keys()
    assert {"404", "409"} <= document["paths"]["/tasks/{task_id}/cancel"]["post"][
        "responses"
    ].keys()


async def test_a_documented_problem_matches_what_is_sent(
    client: httpx.AsyncClient, document: Document, token: TokenFactory
) -> None:
    response = await client.get("/tasks/nope", headers=token())
    assert response.status_code == 404
    assert jsonschema_rs.is_valid(document["components"]["schemas"]["Problem"], response.json())


async def test_the_documented_wait_is_the_applied_one(
    make_app: Callable[..., FastAPI], serve: Any, token: TokenFactory
) -> None:
    async with serve(make_app(api=ApiSettings(max_wait=2.5))) as client:
        document = (await client.get("/openapi.json")).json()
        waits = [
            parameter["schema"]["maximum"]
            for _, _, operation in _operations(document)
            for parameter in operation.get("parameters", ())
            if parameter["name"] == "wait"
        ]
        assert waits == [2.5, 2.5, 2.5]  # POST /tasks/, GET /tasks/{id}, POST .../message
        created = await client.post("/tasks/", json={"type": "echo"}, headers=token())
        task_id = created.json()["id"]
        for request in (
            client.post("/tasks/?wait=2.6", json={"type": "echo"}, headers=token()),
            client.get(f"/tasks/{task_id}?wait=3600", headers=token()),
            client.post("/agents/echo/message?wait=2.6", json={"type": "a"}, headers=token()),
        ):
            response = await request
            assert response.status_code == 422, response.text
            assert "MAS_API__MAX_WAIT" in response.json()["detail"]
        ok = await client.get(f"/tasks/{task_id}?wait=2.5", headers=token())
        assert ok.status_code == 200


async def test_a_wait_under_a_millisecond_is_no_wait(
    client: httpx.AsyncClient, token: TokenFactory
) -> None:
    told = await client.post(
        "/agents/echo/message?wait=1.999e-157", json={"type": "a"}, headers=token()
    )
    assert told.status_code == 202, told.text  # sent, not a 504 for a wait nobody could meet
    created = await client.post("/tasks/?wait=1e-9", json={"type": "echo"}, headers=token())
    assert created.status_code == 202
    read = await client.get(f"/tasks/{created.json()['id']}?wait=1e-300", headers=token())
    assert read.status_code == 200


async def test_the_one_destination_rule_is_in_the_schema(document: Document) -> None:
    # As a client reads it: with the components its references (a budget's) point into.
    schema = {"$ref": "#/components/schemas/TaskIn", "components": document["components"]}
    valid = [
        {"type": "echo"},
        {"agent": "echo", "type": None},
        {"capability": "echo"},
        {"capability": "echo", "type": "echo"},  # the type is the fallback
    ]
    invalid = [
        {},
        {"type": "echo", "agent": "echo"},
        {"agent": None},
        {"payload": {}},
        {"capability": "echo", "agent": "echo"},
        {"capability": "echo", "type": "echo", "agent": "echo"},
    ]
    assert [jsonschema_rs.is_valid(schema, body) for body in valid] == [True] * len(valid)
    assert [jsonschema_rs.is_valid(schema, body) for body in invalid] == [False] * len(invalid)


async def test_bodies_the_schema_refuses_are_422(
    client: httpx.AsyncClient, token: TokenFactory, problem: Callable[..., dict[str, Any]]
) -> None:
    for body in ({}, {"type": "echo", "agent": "echo"}, {"agent": None, "type": None}):
        problem(await client.post("/tasks/", json=body, headers=token()), 422, "exactly one")


async def test_the_agent_types_and_ids_the_gateway_takes_are_in_the_schema(
    document: Document,
) -> None:
    agent_in = document["components"]["schemas"]["AgentIn"]
    assert agent_in["properties"]["type"]["enum"] == ["echo", "trouble"]
    message = document["paths"]["/agents/{agent_id}/message"]["post"]
    (agent_id,) = [p for p in message["parameters"] if p["name"] == "agent_id"]
    assert agent_id["schema"]["pattern"].startswith("^[A-Za-z0-9_]")


async def test_the_event_stream_documents_its_events(document: Document) -> None:
    content = document["paths"]["/tasks/{task_id}/events"]["get"]["responses"]["200"]["content"]
    event = content["text/event-stream"]["schema"]
    assert event["properties"]["event"] == {"const": "status"}
    assert event["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/TaskOut"}
