"""Cluster-wide idempotency on RabbitMQ: Redis claims first, the database when Redis is down.

A message id is handled once across every node, even when the same message reaches two
nodes (published twice to a type queue that both consume, or under two routing keys). Topic
copies are not claimed: every subscriber handles its own. With Redis unreachable, a node
asks the database's record before handling a copy it cannot vouch for, so what another
node recorded is not handled again.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from mas import Agent, HandlerResult, Message
from mas.actors.clock import LoopClock
from mas.config import Settings
from mas.persistence import open_store
from mas.testing import TestRuntime, eventually
from mas.transports.amqp import AmqpTransport
from tests.amqp_support import AmqpScope, amqp_scope, amqp_vhost_url
from tests.conformance.conftest import settle_all
from tests.integration.pg_support import PgSchema
from tests.redis_support import REDIS_URL, delete_keys, reachable_redis

__all__ = ["amqp_scope", "amqp_vhost_url"]

pytestmark = pytest.mark.anyio

NO_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: every claim is "unknown"


@pytest.fixture
async def redis_url(amqp_scope: AmqpScope) -> AsyncIterator[str]:
    """Redis for the transports; the claims they made (the test's prefix) go afterwards."""
    client = await reachable_redis()
    try:
        yield REDIS_URL
    finally:
        await delete_keys(client, f"mas:{amqp_scope.prefix}")
        await client.aclose()


def counting(seen: Counter[str], agent_type: str) -> type[Agent]:
    class Counting(Agent):
        type = agent_type

        async def handle_message(self, message: Message) -> HandlerResult:
            seen[message.id] += 1
            return None

    return Counting


def transport(scope: AmqpScope, redis_url: str) -> AmqpTransport:
    made = AmqpTransport(scope.url, scope.settings(), redis_url=redis_url, dedupe_ttl=60)
    scope.transports.append(made)
    return made


async def test_a_message_published_twice_to_a_type_is_handled_once_across_nodes(
    amqp_scope: AmqpScope, redis_url: str
) -> None:
    seen: Counter[str] = Counter()
    worker = counting(seen, "counter")
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                TestRuntime(
                    transport=transport(amqp_scope, redis_url), node_id=f"d{i}", clock=LoopClock()
                )
            )
            for i in range(3)
        ]
        await nodes[1].spawn(worker, id="counter-1")
        await nodes[2].spawn(worker, id="counter-2")
        message_id = f"charge-{uuid.uuid4()}"
        for _ in range(6):  # round-robin puts copies on both consumers
            await nodes[0].tell("type:counter", Message("charge", {"cents": 5}, id=message_id))
        other = [f"other-{n}-{uuid.uuid4()}" for n in range(4)]
        for each in other:
            await nodes[0].tell("type:counter", Message("charge", {"cents": 1}, id=each))
        await settle_all(nodes)
        duplicates = nodes[1].duplicates + nodes[2].duplicates
    assert seen[message_id] == 1
    assert duplicates == 5
    assert all(seen[each] == 1 for each in other)


async def test_one_message_id_under_several_routing_keys_is_handled_once(
    amqp_scope: AmqpScope, redis_url: str
) -> None:
    """The id is the idempotency key, whatever queue a copy of it went through."""
    seen: Counter[str] = Counter()
    heard: list[tuple[str, str]] = []

    def listener(name: str) -> type[Agent]:
        class Listener(Agent):
            type = f"listener-{name}"
            topics = ("news.*",)

            async def handle_message(self, message: Message) -> HandlerResult:
                heard.append((self.id, message.id))
                return None

        return Listener

    async with AsyncExitStack() as stack:
        client, alpha_node, echo_node = [
            await stack.enter_async_context(
                TestRuntime(
                    transport=transport(amqp_scope, redis_url), node_id=f"k{i}", clock=LoopClock()
                )
            )
            for i in range(3)
        ]
        await alpha_node.spawn(counting(seen, "alpha"), id="x")
        await echo_node.spawn(counting(seen, "echo"), id="y")
        await alpha_node.spawn(listener("a"), id="listen-a")
        await echo_node.spawn(listener("b"), id="listen-b")
        message_id = f"order-{uuid.uuid4()}"
        for target in ("agent:x", "type:echo", "agent:x", "type:echo"):
            await client.tell(target, Message("order", {"n": 1}, id=message_id))
        news_id = f"news-{uuid.uuid4()}"
        await client.publish("news.today", Message("news", id=news_id))
        await settle_all([client, alpha_node, echo_node])
        duplicates = alpha_node.duplicates + echo_node.duplicates
    assert sum(seen.values()) == 1, f"one message id handled {sum(seen.values())} times"
    assert duplicates == 3
    # Every subscriber of a topic handles its own copy of it: topic copies claim nothing.
    assert sorted(heard) == [("listen-a", news_id), ("listen-b", news_id)]


async def test_a_message_handed_back_because_its_mailbox_was_full_is_not_its_own_duplicate(
    amqp_scope: AmqpScope, redis_url: str
) -> None:
    """The node that claimed it defers it; the copy that comes back is handled, once."""
    handled: Counter[str] = Counter()
    gate, busy = asyncio.Event(), asyncio.Event()

    class Busy(Agent):
        type = "busy"

        async def handle_message(self, message: Message) -> HandlerResult:
            busy.set()
            await gate.wait()
            handled[message.payload["name"]] += 1
            return None

    async with AsyncExitStack() as stack:
        client, worker = [
            await stack.enter_async_context(
                TestRuntime(
                    transport=transport(amqp_scope, redis_url), node_id=f"f{i}", clock=LoopClock()
                )
            )
            for i in range(2)
        ]
        await worker.spawn(Busy, id="busy", mailbox_capacity=1, overflow="reject")
        await worker.tell("agent:busy", Message("local", {"name": "l0"}))
        await busy.wait()
        await worker.tell("agent:busy", Message("local", {"name": "l1"}))  # the mailbox is full
        remote = [Message("remote", {"name": f"r{n}"}) for n in range(3)]
        for message in [*remote, remote[0]]:  # r0 twice: its second copy stays a duplicate
            await client.tell("agent:busy", message)
        await eventually(lambda: worker.deferred >= 3, timeout=10)
        gate.set()
        await settle_all([client, worker])
        dead = worker.dead_letters.count
    assert handled == {"l0": 1, "l1": 1, "r0": 1, "r1": 1, "r2": 1}
    assert dead == 0


async def test_without_redis_a_node_asks_the_record_before_handling_a_copy(
    amqp_scope: AmqpScope, pg_schema: PgSchema
) -> None:
    settings = Settings(database_url=pg_schema.url, database_schema=pg_schema.schema)
    store = await open_store(settings, migrate=True)
    await store.close()
    seen: Counter[str] = Counter()
    account = counting(seen, "account")
    persisted = {
        "persist": True,
        "database_url": pg_schema.url,
        "database_schema": pg_schema.schema,
    }
    message_id = f"payment-{uuid.uuid4()}"
    first = TestRuntime(
        transport=transport(amqp_scope, NO_REDIS_URL), node_id="r1", clock=LoopClock(), **persisted
    )
    second = TestRuntime(
        transport=transport(amqp_scope, NO_REDIS_URL), node_id="r2", clock=LoopClock(), **persisted
    )
    client = TestRuntime(
        transport=transport(amqp_scope, NO_REDIS_URL), node_id="r0", clock=LoopClock()
    )
    async with client, second:
        async with first:
            await first.spawn(account, id="acct-1")
            await client.tell("type:account", Message("pay", {"cents": 100}, id=message_id))
            await settle_all([client, first])
            assert seen[message_id] == 1
        # The first node left; another agent of the type, on another node, gets a copy.
        await second.spawn(account, id="acct-2")
        await client.tell("type:account", Message("pay", {"cents": 100}, id=message_id))
        await settle_all([client, second])
        assert second.duplicates == 1
    assert seen[message_id] == 1
