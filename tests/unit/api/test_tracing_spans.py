"""The gateway's spans: a request's server span is the parent of the work it starts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.otel_support import named, spans
from tests.unit.api.conftest import TokenFactory

__all__ = ["spans"]

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


async def test_a_task_is_handled_under_the_request_that_submitted_it(
    spans: InMemorySpanExporter,
    make_app: Callable[..., Any],
    serve: Callable[..., Any],
    token: TokenFactory,
) -> None:
    async with serve(make_app()) as client:
        headers = {**token(), "traceparent": f"00-{TRACE_ID}-{PARENT}-01"}
        created = await client.post("/tasks/", json={"type": "echo"}, headers=headers)
        assert created.status_code == 202, created.text
        assert created.headers["x-trace-id"] == TRACE_ID
        task_id = created.json()["id"]
        done = await client.get(f"/tasks/{task_id}", params={"wait": 5}, headers=token())
        assert done.json()["status"] == "succeeded"

    found = named(spans)
    request, handled = found["POST /tasks/"], found["handle task"]
    assert request.kind is SpanKind.SERVER
    assert request.parent is not None and f"{request.parent.span_id:016x}" == PARENT
    assert f"{request.context.trace_id:032x}" == TRACE_ID
    assert request.attributes is not None
    assert request.attributes["http.response.status_code"] == 202
    assert handled.parent is not None and handled.parent.span_id == request.context.span_id
    assert f"{handled.context.trace_id:032x}" == TRACE_ID
    assert "journal commit" in found


async def test_a_request_without_a_trace_starts_one_with_the_id_it_answers(
    spans: InMemorySpanExporter,
    make_app: Callable[..., Any],
    serve: Callable[..., Any],
    token: TokenFactory,
) -> None:
    async with serve(make_app()) as client:
        answered = await client.get("/agents/", headers=token())
    assert answered.status_code == 200
    [request] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert request.name == "GET /agents/"
    assert request.parent is None
    assert f"{request.context.trace_id:032x}" == answered.headers["x-trace-id"]
