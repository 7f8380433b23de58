"""Distributed back-pressure: work that does not fit waits in the broker, and past a limit it
waits with the client (429 + Retry-After) instead of piling up there.

A worker takes only what its agents' mailboxes hold (the rest stays in the broker's queue);
the gateway reads that queue's depth and refuses new work for it beyond
`MAS_API__MAX_QUEUE_DEPTH`, storing nothing. RabbitMQ is real; both nodes run in this process.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import ClassVar

import aio_pika
import httpx
import pytest
from pydantic import SecretStr

from mas import Agent, HandlerResult, Message, TaskResult
from mas.api.app import create_app
from mas.api.auth import SCOPES, mint_token
from mas.api.state import Gateway
from mas.config import ApiSettings, AuthSettings, Settings
from mas.runtime import Runtime
from mas.testing import eventually
from tests.amqp_support import AmqpScope, amqp_scope, amqp_vhost_url, queue_depth

__all__ = ["amqp_scope", "amqp_vhost_url"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

SECRET = "b" * 40
# Minted at import, so it must outlive the whole session (a loaded CI run passed 10 minutes).
HEADERS = {"Authorization": f"Bearer {mint_token(SECRET, 'tester', sorted(SCOPES), ttl=86_400)}"}
LIMIT = 3


class Gate(Agent):
    """Holds every message until the test opens the gate; one at a time (mailbox of one)."""

    type = "gate"
    mailbox_capacity = 1
    opened: ClassVar[asyncio.Event]

    async def handle_message(self, message: Message) -> HandlerResult:
        await type(self).opened.wait()
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"n": message.payload["n"]})


async def test_work_beyond_the_queue_limit_is_refused_with_429_and_nothing_stored(
    amqp_scope: AmqpScope, tmp_path: Path
) -> None:
    Gate.opened = asyncio.Event()
    settings = Settings(
        persist=True,
        database_url=SecretStr(f"sqlite+aiosqlite:///{tmp_path}/mas.db"),
        auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
        api=ApiSettings(max_queue_depth=LIMIT),
        log_level="WARNING",
    )
    worker_settings = settings.model_copy(update={"api": ApiSettings()})  # records the ends
    async with (
        Runtime(worker_settings, transport=amqp_scope.transport(), node_id="w") as worker,
        Runtime(settings, transport=amqp_scope.transport(), node_id="gw") as gateway,
    ):
        await worker.spawn(Gate, id="gate-1")
        app = create_app(settings, runtime=gateway)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://test") as client,
        ):
            gw: Gateway = app.state.gateway
            gw.backlogs.ttl = 0  # read the depth for every task (1 s in production)
            statuses = []
            for n in range(LIMIT + 2):
                submitted = await client.post(
                    "/tasks/", json={"type": "gate", "payload": {"n": n}}, headers=HEADERS
                )
                statuses.append(submitted.status_code)
                if submitted.status_code == 202:
                    # One is in the handler, unacknowledged; the others wait in the broker.
                    await eventually(lambda n=n: _ready(amqp_scope, n), timeout=10)
            refused = submitted
            accepted = (await client.get("/tasks/", headers=HEADERS)).json()["items"]
            Gate.opened.set()
            ended = [
                (
                    await client.get(f"/tasks/{task['id']}", params={"wait": 20}, headers=HEADERS)
                ).json()["status"]
                for task in accepted
            ]
    assert statuses == [202] * (LIMIT + 1) + [429], statuses
    assert refused.headers["retry-after"]
    assert refused.headers["content-type"] == "application/problem+json"
    assert "type:gate" in refused.json()["detail"]
    assert len(accepted) == LIMIT + 1  # the refused one was never stored
    assert ended == ["succeeded"] * (LIMIT + 1)


async def _ready(scope: AmqpScope, submitted_before: int) -> bool:
    connection = await aio_pika.connect(scope.url, timeout=5)
    try:
        depth = await queue_depth(connection, scope.prefix + "agent_type.gate")
    finally:
        await connection.close()
    return depth == submitted_before
