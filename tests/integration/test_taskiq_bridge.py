"""The TaskIQ bridge: `run_agent_message.kiq(message_json)` from any TaskIQ producer reaches a
mas agent on another node; a bad message ends in mas's dead-letter queue, not in the void."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aio_pika
import pytest
from taskiq.receiver import Receiver
from taskiq_aio_pika import AioPikaBroker

from mas import Agent, HandlerResult, Message
from mas.actors.clock import LoopClock
from mas.config import Settings
from mas.testing import TestRuntime
from mas.transports.taskiq import TASK_NAME, create_broker
from tests.amqp_support import AmqpScope, amqp_scope, amqp_vhost_url, take_dead_letters

__all__ = ["amqp_scope", "amqp_vhost_url"]

pytestmark = pytest.mark.anyio


def settings(scope: AmqpScope) -> Settings:
    return Settings(
        transport="rabbitmq", amqp_url=scope.url, amqp=scope.settings(), log_level="WARNING"
    )


@pytest.fixture
async def taskiq_worker(amqp_scope: AmqpScope) -> AsyncIterator[AioPikaBroker]:
    """A TaskIQ worker for the bridge's broker, in this process (as `taskiq worker` runs it)."""
    worker = create_broker(settings(amqp_scope))
    worker.is_worker_process = True
    await worker.startup()
    finish = asyncio.Event()
    listening = asyncio.create_task(Receiver(worker, run_startup=False).listen(finish))
    prefix = amqp_scope.prefix
    amqp_scope.extra_queues |= {f"{prefix}mas.taskiq", f"{prefix}mas.taskiq.dead_letter"}
    try:
        yield worker
    finally:
        finish.set()
        await asyncio.wait_for(listening, 10)
        await worker.shutdown()
        connection = await aio_pika.connect(amqp_scope.url)
        async with connection:
            channel = await connection.channel()
            await channel.exchange_delete(f"{prefix}mas.taskiq")


async def test_a_taskiq_producer_reaches_a_mas_agent(
    amqp_scope: AmqpScope, taskiq_worker: AioPikaBroker
) -> None:
    got: asyncio.Queue[Message] = asyncio.Queue()

    class Inbox(Agent):
        type = "inbox"

        async def handle_message(self, message: Message) -> HandlerResult:
            got.put_nowait(message)
            return None

    client = create_broker(settings(amqp_scope))
    await client.startup()
    node = TestRuntime(transport=amqp_scope.transport(), node_id="host", clock=LoopClock())
    try:
        async with node:
            await node.spawn(Inbox, id="inbox-1")
            message = Message("note", {"text": "from taskiq"}, target="type:inbox")
            bridge = client.find_task(TASK_NAME)
            assert bridge is not None
            await bridge.kiq(message.to_json().decode())
            received = await asyncio.wait_for(got.get(), 15)
    finally:
        await client.shutdown()
    assert (received.id, received.payload) == (message.id, {"text": "from taskiq"})


async def test_a_bad_message_from_taskiq_is_dead_lettered_with_the_reason(
    amqp_scope: AmqpScope, taskiq_worker: AioPikaBroker
) -> None:
    client = create_broker(settings(amqp_scope))
    await client.startup()
    try:
        bridge = client.find_task(TASK_NAME)
        assert bridge is not None
        await bridge.kiq('{"type": "x", "target": "agent:nobody-here"}')
        await bridge.kiq("not json at all")
    finally:
        await client.shutdown()
    async with await aio_pika.connect(amqp_scope.url) as connection:
        letters = await take_dead_letters(connection, amqp_scope.prefix, 2, timeout=15)
    reasons = [letter.headers["x-mas-reason"] for letter in letters]
    assert sorted(reasons) == ["invalid_message", "unknown_address"]
