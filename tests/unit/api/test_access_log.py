"""The access log: every request leaves one JSON line an operator can filter on, refusals
(401, 403) at WARNING with the reason the client got, healthy probes at DEBUG only."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.unit.api.conftest import TokenFactory

pytestmark = pytest.mark.anyio


def requests_logged(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == "http_request"]


async def test_an_accepted_task_is_logged_with_caller_status_and_trace(
    log_lines: io.StringIO, client: httpx.AsyncClient, token: TokenFactory
) -> None:
    response = await client.post("/tasks/", json={"type": "echo"}, headers=token())
    assert response.status_code == 202
    (line,) = [r for r in requests_logged(log_lines) if r["path"] == "/tasks/"]
    assert (line["level"], line["method"], line["status"]) == ("info", "POST", 202)
    assert line["caller"] == "tester"
    assert line["trace_id"] == response.headers["x-trace-id"]
    assert line["duration_ms"] >= 0


async def test_refusals_are_warnings_with_the_reason_the_client_got(
    log_lines: io.StringIO, client: httpx.AsyncClient, token: TokenFactory
) -> None:
    # No token at all (refused before the body is read), then a token lacking the scope.
    unauthorized = await client.post("/tasks/", json={"type": "echo"})
    forbidden = await client.get("/tasks/", headers=token("agents:read"))
    assert (unauthorized.status_code, forbidden.status_code) == (401, 403)
    by_status = {line["status"]: line for line in requests_logged(log_lines)}
    assert by_status[401]["level"] == "warning"
    assert by_status[401]["detail"] == unauthorized.json()["detail"]
    assert "caller" not in by_status[401]
    assert by_status[403]["level"] == "warning"
    assert by_status[403]["caller"] == "tester"
    assert "tasks:read" in by_status[403]["detail"]


async def test_healthy_probes_are_debug_lines(
    log_lines: io.StringIO, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/livez")).status_code == 200
    (line,) = [r for r in requests_logged(log_lines) if r["path"] == "/livez"]
    assert line["level"] == "debug"


async def test_the_access_log_can_be_switched_off(
    log_lines: io.StringIO,
    make_app: Callable[..., FastAPI],
    serve: Callable[[FastAPI], Any],
    token: TokenFactory,
) -> None:
    async with serve(make_app(api={"access_log": False})) as client:
        assert (await client.get("/tasks/", headers=token())).status_code == 200
    assert requests_logged(log_lines) == []
