"""A request's body is read only for a caller with a valid token, and never past the cap.

Driven at the ASGI level, with a `receive` that counts what the app takes: the promise is
about bytes read from the client, which a response code alone would not show (before this,
a 500 MB chunked upload without a token was read whole, then refused).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from tests.unit.api.conftest import MAX_BYTES, auth

pytestmark = pytest.mark.anyio

CHUNK = 1000


class Upload:
    """A client streaming `chunks` of a body (no Content-Length), counting what was read."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.read = 0
        self.status: int | None = None
        self.headers: dict[str, str] = {}

    async def receive(self) -> dict[str, Any]:
        if self.read >= self.chunks * CHUNK:
            return {"type": "http.disconnect"}
        self.read += CHUNK
        more = self.read < self.chunks * CHUNK
        return {"type": "http.request", "body": b"x" * CHUNK, "more_body": more}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}


def scope(path: str, headers: dict[str, str], length: int | None = None) -> dict[str, Any]:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    raw.append((b"content-type", b"application/json"))
    if length is not None:
        raw.append((b"content-length", str(length).encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }


PATHS = ["/tasks/", "/agents/", "/agents/echo/message", "/tasks/some-task/cancel", "/nowhere"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Basic dXNlcjpwYXNz"}],
    ids=["no-token", "bad-token", "not-bearer"],
)
async def test_without_a_valid_token_no_byte_of_the_body_is_read(
    app: FastAPI, client: Any, path: str, headers: dict[str, str]
) -> None:
    upload = Upload(chunks=100_000)  # 100 MB, were it read
    await app(scope(path, headers), upload.receive, upload.send)
    assert (upload.status, upload.read) == (401, 0)
    assert upload.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_the_cap_is_refused_having_read_at_most_the_cap(
    app: FastAPI, client: Any, gw: Any, declared: bool
) -> None:
    upload = Upload(chunks=100_000)
    length = 100_000 * CHUNK if declared else None
    await app(scope("/tasks/", auth(), length), upload.receive, upload.send)
    assert upload.status == 413
    assert upload.read <= (0 if declared else MAX_BYTES + CHUNK)
    assert await gw.store.list_tasks() == []


async def test_a_body_within_the_cap_reaches_the_route_whole(
    app: FastAPI, client: Any, gw: Any
) -> None:
    body = b'{"type": "echo", "payload": {"text": "' + b"y" * 1500 + b'"}}'
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        if not pieces:
            return {"type": "http.disconnect"}
        piece = pieces.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope("/tasks/", auth()), receive, send)
    assert status == [202]
    (task,) = await gw.store.list_tasks()
    assert task.payload == {"text": "y" * 1500}
