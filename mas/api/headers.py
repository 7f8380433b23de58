"""Security headers on every response of the gateway, and CORS when an operator asks for it.

A gateway put on a network is read by browsers as well as by clients: a JSON body must not
be sniffed into HTML, a URL (and the token in a dashboard link's fragment) must not leak as
a Referer, and a task's result must not sit in a shared or browser cache. These headers are
added by a pure ASGI middleware that wraps the whole app (outside the error handler), so the
401 and 413 answers of admission and a 500 carry them too. A response that sets a header
itself (the dashboard's `Cache-Control: no-cache`, its policy) keeps its own value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CORS_HEADERS", "CORS_METHODS", "SecurityHeaders", "cors_options"]

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
)
_JSON = (b"application/json", b"application/problem+json")

CORS_METHODS = ("GET", "HEAD", "POST")
"""Every method a route of the gateway answers (a preflight for any other is refused)."""

CORS_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "X-Trace-Id", "traceparent")
"""Request headers a browser client may send: the token, a JSON body, a retry key, a trace."""

_EXPOSED = ("Location", "Retry-After", "X-Trace-Id", "WWW-Authenticate")
"""Response headers a browser client may read: where a task is, when to retry, the trace."""


class SecurityHeaders:
    """Adds nosniff and no-referrer to every response, `no-store` to JSON (see module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _ALWAYS if h[0] not in present)
                content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if content_type.split(b";")[0].strip() in _JSON and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_options(origins: Sequence[str]) -> dict[str, Any]:
    """Starlette's `CORSMiddleware` options for a gateway read by pages of `origins`.

    Credentials (cookies) are not allowed: the gateway reads a bearer token, never a cookie,
    so a page of another origin gets nothing it could not send itself.
    """
    return {
        "allow_origins": list(origins),
        "allow_methods": list(CORS_METHODS),
        "allow_headers": list(CORS_HEADERS),
        "expose_headers": list(_EXPOSED),
        "max_age": 600,
    }
