"""Admission: a request's body is read only for a caller with a valid token, and never past
the size cap, whatever the client says about its length.

FastAPI reads a request's body before it solves the route's dependencies, the token check
among them, and a chunked body (no Content-Length) arrives without a size to refuse up
front. Unchecked, one unauthenticated 500 MB upload took a gateway from 97 MiB to 1.6 GiB.
This middleware runs first: a request that may carry a body (anything but GET, HEAD,
OPTIONS) must present a valid bearer token before a byte of its body is read (401 if not;
the route still checks its scopes), a declared length over the cap is a 413 at once, and a
streamed body is read up to the cap and refused (413) the moment it passes it. What an
authenticated request costs is then bounded by `MAS_MESSAGE_MAX_BYTES`; an unauthenticated
one costs its headers.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mas.api.auth import admit
from mas.api.problems import Problem, problem_response

__all__ = ["Admission"]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


class Admission:
    """Checks the token and the size of a request before its body is read (see module)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            await admit(request, frozenset())  # who it is; the route checks what it may do
        except Problem as problem:
            response = problem_response(
                request, problem.status, problem.title, problem.detail, problem.headers
            )
            await response(scope, receive, send)
            return
        length = request.headers.get("content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_bytes:
                await self._too_large(request, f"the body is {int(length)} bytes", send)
                return
            await self.app(scope, receive, send)  # the server holds it to that length
            return
        body = await self._read_capped(receive)
        if body is None:
            await self._too_large(request, "the streamed body (no Content-Length) is more", send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_capped(self, receive: Receive) -> bytes | None:
        """The whole streamed body, or None as soon as it passes the cap (the rest unread)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return b"".join(chunks)  # the client left: the app sees the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, request: Request, size: str, send: Send) -> None:
        detail = f"{size}, over the {self.max_bytes}-byte cap (MAS_MESSAGE_MAX_BYTES)"
        response = problem_response(
            request, 413, "Payload Too Large", detail, {"Connection": "close"}
        )
        await response(request.scope, request.receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the body read already, then the client's own events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
