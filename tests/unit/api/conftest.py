"""A running gateway for API tests: an app with its own runtime and SQLite store, a client, tokens.

`TroubleAgent` (id and type `trouble`) misbehaves on demand: `boom` raises, `fragile` raises
while `TroubleAgent.fragile` is set, `slow` blocks until the test sets
`TroubleAgent.release`, `count` counts; every message type it handles
is counted in `TroubleAgent.calls`, so tests can tell how often a handler ran.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from agents.echo import EchoAgent
from mas import Agent, HandlerResult, Message, TaskResult
from mas.api.app import create_app
from mas.api.auth import SCOPES, mint_token
from mas.api.problems import PROBLEM_JSON
from mas.api.state import Gateway
from mas.config import AuthSettings, RetrySettings, Settings

SECRET = "x" * 40
MAX_BYTES = 2048

TokenFactory = Callable[..., dict[str, str]]


class TroubleAgent(Agent):
    """Crashes on `boom`, blocks on `slow` until released, answers `plain` with a plain
    reply (a task's too), counts every call."""

    type = "trouble"
    capabilities = ("trouble",)
    max_attempts = 2

    calls: ClassVar[Counter[str]] = Counter()
    fragile: ClassVar[bool] = True
    started: ClassVar[asyncio.Event]
    release: ClassVar[asyncio.Event]

    async def handle_message(self, message: Message) -> HandlerResult:
        cls = type(self)
        cls.calls[message.type] += 1
        if message.type == "boom" or (message.type == "fragile" and cls.fragile):
            raise RuntimeError(f"{message.type} requested by the test")
        if message.type == "slow":
            cls.started.set()
            await cls.release.wait()
        body = {"handled": message.type, "calls": cls.calls[message.type]}
        if message.task_id is not None and message.type != "plain":
            return TaskResult.succeeded(message.task_id, body)
        return message.reply(body)


class Blocker(Agent):
    """A one-slot mailbox that rejects on overflow; its handler blocks until released."""

    type = "blocker"
    mailbox_capacity = 1
    overflow = "reject"

    started: ClassVar[asyncio.Event]
    release: ClassVar[asyncio.Event]

    async def handle_message(self, message: Message) -> HandlerResult:
        type(self).started.set()
        await type(self).release.wait()
        return None


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth": AuthSettings(jwt_secret=SecretStr(SECRET)),
        "database_url": SecretStr(f"sqlite+aiosqlite:///{tmp_path}/mas.db"),
        "log_level": "WARNING",
        "message_max_bytes": MAX_BYTES,
        "retry": RetrySettings(base_delay=0.0, max_delay=0.0, jitter=0.0),
    }
    values.update(overrides)
    return Settings(**values)


def build_app(settings: Settings) -> FastAPI:
    return create_app(
        settings,
        start_agents=[EchoAgent, TroubleAgent],
        agent_classes=[EchoAgent, TroubleAgent],
    )


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (runtime, store, agents) and yield a client talking to it."""
    TroubleAgent.calls = Counter()
    TroubleAgent.fragile = True
    TroubleAgent.started = asyncio.Event()
    TroubleAgent.release = asyncio.Event()
    Blocker.started = asyncio.Event()
    Blocker.release = asyncio.Event()
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                yield client
        finally:
            # Blocked handlers must return, or shutdown waits out its timeout.
            TroubleAgent.release.set()
            Blocker.release.set()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return build_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app) as client:
        yield client


@pytest.fixture
def gw(app: FastAPI, client: httpx.AsyncClient) -> Gateway:
    """The running app's Gateway (runtime, store); depends on `client` so the app is up."""
    gateway: Gateway = app.state.gateway
    return gateway


def auth(*scopes: str) -> dict[str, str]:
    """Authorization header with a token granting `scopes` (all scopes when none given)."""
    granted = scopes or tuple(SCOPES)
    return {"Authorization": f"Bearer {mint_token(SECRET, 'tester', granted, ttl=600)}"}


@pytest.fixture
def token() -> TokenFactory:
    return auth


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., FastAPI]:
    """`make_app(**settings)`: another app, with these settings changed (serve it with `serve`)."""
    return lambda **overrides: build_app(make_settings(tmp_path, **overrides))


@pytest.fixture
def serve() -> Callable[[FastAPI], Any]:
    """`async with serve(app) as client`: run an app made by `make_app`."""
    return serving


@pytest.fixture
def trouble() -> type[TroubleAgent]:
    return TroubleAgent


@pytest.fixture
async def full_agent(client: httpx.AsyncClient, gw: Gateway) -> str:
    """The id of a `Blocker` whose handler holds one message and whose one slot is taken."""
    await gw.runtime.spawn(Blocker, id="narrow")
    first = await client.post("/agents/narrow/message", json={"type": "a"}, headers=auth())
    assert first.status_code == 202
    await asyncio.wait_for(Blocker.started.wait(), 5)  # the handler holds the first
    second = await client.post("/agents/narrow/message", json={"type": "b"}, headers=auth())
    assert second.status_code == 202  # fills the one slot
    return "narrow"


@pytest.fixture
def problem() -> Callable[..., dict[str, Any]]:
    """`problem(response, status, *needles)`: see `assert_problem`."""
    return assert_problem


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    """The response is a problem+json of `status` whose detail mentions every needle."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"]
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body
