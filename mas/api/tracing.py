"""Trace ids at the edge: accept W3C `traceparent` or `X-Trace-Id`, or start a trace."""

from __future__ import annotations

import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.contextvars import bind_contextvars, reset_contextvars

from mas.observability import tracing

__all__ = ["TraceMiddleware", "trace_id_from_headers"]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_TRACE_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def trace_id_from_headers(headers: dict[str, str]) -> str:
    """The caller's trace id when it sent a valid one, else a new one (32 hex digits)."""
    parent = _TRACEPARENT.match(headers.get("traceparent", "").strip().lower())
    if parent and parent.group(1) != "0" * 32:
        return parent.group(1)
    given = headers.get("x-trace-id", "").strip()
    if _TRACE_ID.match(given):
        return given
    return uuid.uuid4().hex


class TraceMiddleware:
    """Binds `trace_id` into the request's log context and echoes it as `X-Trace-Id`; when
    tracing is on, answers the request under a server span of that trace (the parent of
    whatever the request sends)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        trace_id = trace_id_from_headers(headers)
        scope.setdefault("state", {})["trace_id"] = trace_id
        tokens = bind_contextvars(trace_id=trace_id)

        status: list[int] = []

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message.setdefault("headers", []).append((b"x-trace-id", trace_id.encode()))
            await send(message)

        try:
            spans = tracing.active()
            if spans is None:
                await self.app(scope, receive, send_with_trace)
                return
            method = scope["method"]
            with spans.serving(method, scope["path"], headers.get("traceparent"), trace_id) as span:
                await self.app(scope, receive, send_with_trace)
                route = scope.get("route")
                if route is not None and hasattr(route, "path"):
                    span.update_name(f"{method} {route.path}")
                    span.set_attribute("http.route", route.path)
                if status:
                    span.set_attribute("http.response.status_code", status[0])
        finally:
            reset_contextvars(**tokens)
