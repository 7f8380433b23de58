"""The access log: one structured line per HTTP request, so an operator sees who was refused.

Each line (`http_request`) carries the method, path, status, duration, client address, the
caller (the token's subject, once the token was checked) and, for an error, the problem's
title and detail as the client got them. The level says what to look at: WARNING for a
refusal an operator may need to act on (401, 403, 429 and 503: a probe, a leaked or
under-scoped token, a flood, an outage), ERROR for any other 5xx, DEBUG for a healthy probe
(`/livez`, `/readyz`, `/metrics` are scraped every few seconds), INFO for the rest. The
request's `trace_id` comes from the log context `TraceMiddleware` binds, so this middleware
runs inside it.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLog", "level_for"]

_log = structlog.get_logger("mas.api.access")

_PROBES = frozenset({"/livez", "/readyz", "/metrics"})
_WATCHED = frozenset({401, 403, 429, 503})


def level_for(path: str, status: int) -> str:
    """The log level of a request's line (see the module)."""
    if status in _WATCHED:
        return "warning"
    if status >= 500:
        return "error"
    if path in _PROBES and status < 400:
        return "debug"
    return "info"


class AccessLog:
    """Logs each HTTP request when its response ends (a stream: when the stream ends)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server sends when the app raised before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            path = scope["path"]
            fields: dict[str, Any] = {
                "method": scope["method"],
                "path": path,
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
            client = scope.get("client")
            if client:
                fields["client"] = client[0]
            state = scope.get("state", {})
            for key in ("caller", "problem", "detail"):
                if key in state:
                    fields[key] = state[key]
            getattr(_log, level_for(path, status))("http_request", **fields)
