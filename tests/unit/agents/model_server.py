"""A real HTTP server speaking the chat-completions protocol, for tests of model calls.

It answers from a script: a response (a 429 with Retry-After, a 500, a refusal), a float (a
slow answer, past the client's timeout), a text or a dict (the model's message). It counts
the calls and keeps each request, so a test can assert what the model was told and that a
recorded answer is never paid for twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from pydantic import SecretStr

from mas.config import LLMSettings

__all__ = ["GOOD_PLAN", "KEY", "ModelServer", "answer", "model"]

KEY = "sk-test-secret-key-000"

GOOD_PLAN = {
    "steps": [
        {"id": "a", "capability": "calc", "input": {"expression": "6 * 7"}},
        {
            "id": "b",
            "capability": "calc",
            "input": {"expression": "${a.value} + 1"},
            "depends_on": ["a"],
        },
    ]
}


def answer(content: str, prompt: int = 10, completion: int = 5) -> web.Response:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }
    return web.json_response(body)


class ModelServer:
    """A chat-completions endpoint answering from `script` (then the last entry forever)."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.authorizations: list[str | None] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        self.requests.append(await request.json())
        self.authorizations.append(request.headers.get("Authorization"))
        step = self.script[min(len(self.requests), len(self.script)) - 1]
        if isinstance(step, float):  # a slow answer: past the client's timeout
            await asyncio.sleep(step)
            return answer(json.dumps(GOOD_PLAN))
        if isinstance(step, web.Response):
            return step
        return answer(step if isinstance(step, str) else json.dumps(step))

    @property
    def calls(self) -> int:
        return len(self.requests)

    def settings(self, **overrides: Any) -> LLMSettings:
        values: dict[str, Any] = {
            "base_url": self.url,
            "api_key": SecretStr(KEY),
            "model": "test-model",
            "timeout": 5.0,
            "attempts": 4,
            "retry_after_max": 1.0,
        }
        return LLMSettings(**(values | overrides))


@pytest.fixture
async def model() -> AsyncIterator[ModelServer]:
    server = ModelServer([])
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield server
    finally:
        await runner.cleanup()
