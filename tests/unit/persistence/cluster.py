"""Two nodes on one in-memory broker and one database: a gateway (HTTP app, no agents) and
workers, as `mas api` and `mas worker` run over RabbitMQ; for tests of what crosses nodes.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import SecretStr

from mas import Agent, HandlerResult, Message, TaskResult
from mas.api.app import create_app
from mas.api.auth import SCOPES, mint_token
from mas.config import AuthSettings, OutboxSettings
from mas.errors import TransportError
from mas.persistence import Store
from mas.runtime import Runtime
from mas.transports.memory import MemoryBroker, MemoryTransport
from tests.unit.persistence.databases import Database

__all__ = ["HEADERS", "Cluster", "Counting", "Refusing", "cluster"]

SECRET = "o" * 40
# Minted at import, so it must outlive the whole session (a loaded CI run passed 10 minutes).
HEADERS = {"Authorization": f"Bearer {mint_token(SECRET, 'tester', sorted(SCOPES), ttl=86_400)}"}


class Counting(Agent):
    """Completes every task, counting how often each message id was handled (the effect)."""

    type = "counting"
    handled: ClassVar[Counter[str]] = Counter()
    hold: ClassVar[asyncio.Event | None] = None

    async def handle_message(self, message: Message) -> HandlerResult:
        type(self).handled[message.id] += 1
        if type(self).hold is not None:
            await type(self).hold.wait()
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"n": message.payload.get("n")})


class Refusing(MemoryTransport):
    """A node's broker connection that refuses every send while `down` (an outage)."""

    down = False

    async def send(self, message: Message, *, resent: bool = False) -> None:
        if self.down:
            raise TransportError("the broker is away (test)")
        await super().send(message, resent=resent)


class Cluster:
    """A gateway node (HTTP app, no agents) and worker nodes sharing a broker and database."""

    def __init__(self, db: Database, stack: AsyncExitStack) -> None:
        self.db = db
        self.stack = stack
        self.broker = MemoryBroker(serialize=True)
        self.gateway_transport = Refusing(self.broker)
        self.client: httpx.AsyncClient
        self.store: Store

    def settings(self, **overrides: Any) -> Any:
        return self.db.settings(
            auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
            outbox=OutboxSettings(lease=0.5, sweep_interval=0.05),
            database_timeout=1,
            shutdown_timeout=2,
            **overrides,
        )

    async def worker(self, node_id: str = "worker", **overrides: Any) -> Runtime:
        runtime = await self.stack.enter_async_context(
            Runtime(
                self.settings(**overrides),
                transport=MemoryTransport(self.broker),
                node_id=node_id,
            )
        )
        await runtime.spawn(Counting, id=f"counting-{node_id}")
        return runtime

    async def gateway(self) -> Runtime:
        runtime = await self.stack.enter_async_context(
            Runtime(self.settings(), transport=self.gateway_transport, node_id="gateway")
        )
        app = create_app(self.settings(), runtime=runtime)
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.client = await self.stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        return runtime

    async def submit(self, n: int, **params: Any) -> httpx.Response:
        body = {"type": "counting", "payload": {"n": n}}
        return await self.client.post("/tasks/", json=body, params=params, headers=HEADERS)

    async def task(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        response = await self.client.get(
            f"/tasks/{task_id}", params={"wait": wait}, headers=HEADERS
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def cluster(db: Database) -> AsyncIterator[Cluster]:
    Counting.handled = Counter()
    Counting.hold = None
    async with AsyncExitStack() as stack:
        store = await db.open_store(migrate=True)
        stack.push_async_callback(store.close)
        made = Cluster(db, stack)
        made.store = store
        yield made
