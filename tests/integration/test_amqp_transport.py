"""The RabbitMQ transport when things go wrong, against the real broker.

Poison and undecodable messages end in the broker's dead-letter queue with the reason in their
headers; an oversized message is refused before it is published; an address nobody serves is
an error at once; a broker connection cut mid-run loses nothing and handles nothing twice; a
broker that stops answering makes `send` fail after `publish_timeout` instead of hanging; an
agent stopped on one node leaves its queued messages (and those still arriving) to a standby on
another, and stays stopped when the node's connection is restored.

Faults touch this test's connections only (other sessions share the broker): the test's nodes
reach RabbitMQ through a `FaultProxy` (tests/fault_proxy.py) that cuts their connections, or
blackholes them: open, and silent both ways.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection
from pydantic import SecretStr
from structlog.testing import capture_logs
from yarl import URL

from mas import Agent, HandlerResult, Message, MessageTooLarge, UnknownAgent
from mas.actors.clock import LoopClock
from mas.config import Settings
from mas.errors import TransportError
from mas.messages import body_id
from mas.persistence import Store
from mas.runtime import Runtime
from mas.testing import Probe, TestRuntime, eventually
from mas.transports.amqp import AmqpTransport
from tests.amqp_support import (
    AmqpScope,
    amqp_scope,
    amqp_vhost_url,
    consumer_prefetch,
    publish_bare,
    queue_depth,
    take_dead_letters,
)
from tests.fault_proxy import FaultProxy, fault_proxy

__all__ = ["amqp_scope", "amqp_vhost_url"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


# -- helpers -------------------------------------------------------------------------------


def node(transport: AmqpTransport, node_id: str, **settings: Any) -> TestRuntime:
    """A runtime on the broker; its messages travel in real time, so it uses the loop's clock."""
    return TestRuntime(transport=transport, node_id=node_id, clock=LoopClock(), **settings)


@pytest.fixture
async def broker(amqp_scope: AmqpScope) -> AsyncIterator[AbstractConnection]:
    """A plain aio-pika connection of the test's own, to look at (or write to) the broker."""
    connection = await aio_pika.connect(amqp_scope.url, timeout=5)
    try:
        yield connection
    finally:
        await connection.close()


def amqp(rt: Runtime) -> AmqpTransport:
    assert isinstance(rt.transport, AmqpTransport)
    return rt.transport


async def wait_until_drained(
    connection: AbstractConnection, queue: str, nodes: list[Runtime], timeout: float = 5
) -> None:
    """Wait until `queue` holds nothing ready and no node holds an unsettled delivery."""

    async def drained() -> bool:
        return all(amqp(rt).idle for rt in nodes) and not await queue_depth(connection, queue)

    await eventually(drained, timeout)


@pytest.fixture
async def proxy(amqp_scope: AmqpScope) -> AsyncIterator[FaultProxy]:
    broker = URL(amqp_scope.url)
    async with fault_proxy("rabbitmq", broker.host or "127.0.0.1", broker.port or 5672) as running:
        yield running


def proxied_transport(scope: AmqpScope, proxy: FaultProxy, **overrides: object) -> AmqpTransport:
    """A transport that reaches the broker through `proxy` (its queues still cleaned up); it
    reconnects after 0.1 s, not aio-pika's 5."""
    url = URL(proxy.url(scope.url)).update_query(reconnect_interval="0.1")
    transport = AmqpTransport(str(url), scope.settings(**overrides), max_bytes=1_048_576)
    scope.transports.append(transport)
    return transport


class Counting(Agent):
    """Counts the messages it handles by id, and signals when a target count is reached."""

    type = "counting"
    seen: Counter[str]
    target: int
    reached: asyncio.Event

    async def handle_message(self, message: Message) -> HandlerResult:
        type(self).seen[message.id] += 1
        if sum(type(self).seen.values()) >= type(self).target:
            type(self).reached.set()
        return None


class Echo(Agent):
    type = "echo"

    async def handle_message(self, message: Message) -> HandlerResult:
        return message.reply({"echo": message.payload})


def counting(target: int) -> type[Counting]:
    return type(
        "CountingAgent",
        (Counting,),
        {"seen": Counter(), "target": target, "reached": asyncio.Event()},
    )


# -- 1. poison messages --------------------------------------------------------------------


async def test_a_poison_message_lands_in_the_broker_dead_letter_queue_after_max_attempts(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    crashes: list[int] = []
    crashed = asyncio.Event()
    healthy = Probe()

    class Poisoned(Agent):
        type = "poisoned"

        async def handle_message(self, message: Message) -> HandlerResult:
            crashes.append(message.payload["n"])
            crashed.set()
            raise ValueError(f"cannot digest {message.payload['n']}")

    retry = {"max_attempts": 3, "base_delay": 0.3, "max_delay": 1.0, "jitter": 0.1}
    async with (
        node(amqp_scope.transport(), "a") as a,
        node(amqp_scope.transport(), "b", retry=retry) as b,
    ):
        await b.spawn(Poisoned, id="poisoned")
        await b.spawn(healthy.agent(), id="healthy")
        poison = Message("eat", {"n": 7})
        await a.tell("agent:poisoned", poison)
        async with asyncio.timeout(5):
            await crashed.wait()
        # The poison waits for its retries; the same node's other agent keeps working meanwhile.
        for n in range(20):
            await a.tell("agent:healthy", Message("food", {"n": n}))
        await healthy.wait_for(20)
        assert len(crashes) < 3, "the healthy agent waited for the poison's retries"

        [letter] = await take_dead_letters(broker, amqp_scope.prefix, 1)
        await wait_until_drained(broker, amqp_scope.prefix + "agent.poisoned", [b])

    assert crashes == [7, 7, 7]
    assert [m.payload["n"] for m in healthy.messages] == list(range(20))
    headers = letter.headers
    assert headers["x-mas-reason"] == "max_attempts"
    assert headers["x-mas-attempts"] == 3
    assert headers["x-mas-agent-id"] == "poisoned"
    assert headers["x-mas-error"] == "ValueError: cannot digest 7"
    assert headers["x-mas-routing-key"] == "agent.poisoned"
    assert Message.from_json(letter.body).id == poison.id  # the original body, untouched
    assert b.dead_letters.by_reason["max_attempts"] == 1


# -- 2. undecodable bodies -----------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\x80\x81 not json at all", id="not-json"),
        pytest.param(b'{"kind": "hello", "n": 1}', id="json-not-a-message"),
        pytest.param(b'["type", "payload"]', id="json-array"),
        pytest.param(b'{"type": "x", "payload": 3}', id="payload-not-an-object"),
    ],
)
async def test_an_undecodable_body_is_dead_lettered_at_once_and_the_queue_moves_on(
    amqp_scope: AmqpScope, broker: AbstractConnection, body: bytes
) -> None:
    probe = Probe()
    async with node(amqp_scope.transport(), "a") as a, node(amqp_scope.transport(), "b") as b:
        await b.spawn(probe.agent(), id="target")
        channel = await broker.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(amqp_scope.prefix + "agents.direct")
        await exchange.publish(
            aio_pika.Message(body, message_id="garbage-1"), "agent.target", mandatory=True
        )
        await channel.close()
        [letter] = await take_dead_letters(broker, amqp_scope.prefix, 1, timeout=3)
        await a.tell("agent:target", Message("valid", {"after": "garbage"}))
        await probe.wait_for(1)
        queue = amqp_scope.prefix + "agent.target"
        await wait_until_drained(broker, queue, [b])
        assert amqp(b).idle
    # Closing b's channels would have returned anything it left unacknowledged to the queue.
    assert await queue_depth(broker, queue) == 0
    assert letter.body == body
    assert letter.headers["x-mas-reason"] == "invalid_message"
    assert letter.headers["x-mas-attempts"] == 0  # not retried: it never will decode
    assert letter.headers["x-mas-routing-key"] == "agent.target"
    assert str(letter.headers["x-mas-error"]).startswith("InvalidMessage: ")
    assert [m.payload for m in probe.messages] == [{"after": "garbage"}]


async def test_a_body_over_the_receivers_cap_is_dead_lettered_not_handled(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    probe = Probe()
    small = AmqpTransport(amqp_scope.url, amqp_scope.settings(), max_bytes=512)
    amqp_scope.transports.append(small)
    async with node(amqp_scope.transport(), "a") as a, node(small, "b") as b:
        await b.spawn(probe.agent(), id="target")
        big = Message("big", {"blob": "x" * 1000})
        await a.tell("agent:target", big)  # a's cap is 1 MiB: it sends
        await a.tell("agent:target", Message("small"))
        await probe.wait_for(1)
        [letter] = await take_dead_letters(broker, amqp_scope.prefix, 1)
        await wait_until_drained(broker, amqp_scope.prefix + "agent.target", [b])
        assert amqp(b).idle
    assert probe.types == ["small"]
    assert letter.headers["x-mas-reason"] == "invalid_message"
    assert str(letter.headers["x-mas-error"]).startswith("MessageTooLarge: ")
    assert Message.from_json(letter.body).id == big.id


# -- 3. the size cap at send ---------------------------------------------------------------


@pytest.mark.parametrize("configured_by", ["transport", "runtime_settings"])
async def test_a_message_over_the_size_cap_is_refused_at_send_and_never_published(
    amqp_scope: AmqpScope, broker: AbstractConnection, configured_by: str
) -> None:
    probe = Probe()
    sender: TestRuntime
    if configured_by == "transport":
        transport = AmqpTransport(amqp_scope.url, amqp_scope.settings(), max_bytes=1024)
        amqp_scope.transports.append(transport)
        sender = node(transport, "a")
    else:
        settings = Settings(
            transport="rabbitmq",
            amqp_url=amqp_scope.url,
            amqp=amqp_scope.settings(),
            message_max_bytes=1024,
            serialize_messages=True,
            log_level="WARNING",
        )
        sender = TestRuntime(settings, node_id="a", clock=LoopClock())
        assert isinstance(sender.transport, AmqpTransport)
        amqp_scope.transports.append(sender.transport)
    async with sender as a, node(amqp_scope.transport(), "b") as b:
        await b.spawn(probe.agent(), id="target")
        with pytest.raises(MessageTooLarge):
            await a.tell("agent:target", Message("big", {"blob": "x" * 2000}))
        with pytest.raises(MessageTooLarge):
            await a.publish("news.big", Message("big", {"blob": "x" * 2000}))
        await a.tell("agent:target", Message("small"))
        await probe.wait_for(1)
        await wait_until_drained(broker, amqp_scope.prefix + "agent.target", [b])
    assert probe.types == ["small"]  # the big one never reached the broker
    assert await queue_depth(broker, amqp_scope.prefix + "agents.dead_letter") == 0


# -- 4. reconnection -----------------------------------------------------------------------


async def test_connections_cut_mid_run_lose_nothing_and_handle_nothing_twice(
    amqp_scope: AmqpScope, proxy: FaultProxy, broker: AbstractConnection
) -> None:
    total = 200
    agent = counting(total + 1)
    listener = Probe()
    cut_at = (60, 140)
    cuts: list[int] = []
    async with (
        node(proxied_transport(amqp_scope, proxy), "a") as a,
        node(proxied_transport(amqp_scope, proxy), "b") as b,
    ):
        await b.spawn(agent, id="counter")
        await b.spawn(Echo, id="echo")
        listening = await b.spawn(listener.agent("listener"), id="listener")
        cell = b.local_cell(listening.id)
        assert cell is not None
        await cell.ctx.subscribe("alerts.*")
        connected = proxy.accepted
        ids: list[str] = []
        for n in range(total):
            if n in cut_at:
                # Both nodes lose their connection: b holds prefetched, unacknowledged
                # deliveries and a's next publish finds no channel.
                cuts.append(proxy.cut())
            message = Message("count", {"n": n})
            ids.append(message.id)
            await a.tell("agent:counter", message)
        # After the cuts every consumer must be back: the agent queue's, the node's reply
        # queue (exclusive: the broker deleted it with the connection) and its topic queue.
        last = Message("after-reconnect")
        ids.append(last.id)
        await a.tell("agent:counter", last)
        reply = await a.ask("agent:echo", Message("ping", {"after": "cuts"}), timeout=5)
        await a.publish("alerts.disk", Message("alert", {"free": 1}))
        async with asyncio.timeout(8):
            await agent.reached.wait()
        await listener.wait_for(1)
        queue = amqp_scope.prefix + "agent.counter"
        await wait_until_drained(broker, queue, [a, b])
        await b.settle()
    assert cuts == [2, 2], "each cut should have hit both nodes' connections"
    assert proxy.accepted >= connected + 4, "the nodes did not reconnect"
    assert set(agent.seen) == set(ids), "messages were lost"
    assert [i for i, times in agent.seen.items() if times > 1] == [], "handled twice"
    assert reply.payload == {"echo": {"after": "cuts"}}
    assert [m.payload for m in listener.messages] == [{"free": 1}]
    assert b.dead_letters.count == 0
    assert await queue_depth(broker, amqp_scope.prefix + "agents.dead_letter") == 0


async def test_an_agent_stopped_before_a_reconnection_stays_stopped_after_it(
    amqp_scope: AmqpScope, proxy: FaultProxy
) -> None:
    """The robust connection restores consumers: not one this node cancelled on purpose."""
    alive, standby = Probe(), Probe()
    async with (
        node(amqp_scope.transport(), "a") as a,
        node(proxied_transport(amqp_scope, proxy), "b") as b,
    ):
        await b.spawn(Probe().agent("worker"), id="worker")
        await b.spawn(alive.agent(), id="alive")
        await b.stop_agent("worker")  # b no longer consumes agent.worker
        assert proxy.cut() == 1
        # b is back (its live consumer resumed) when a message for `alive` gets handled.
        await a.tell("agent:alive", Message("ping"))
        await alive.wait_for(1)
        for n in range(5):
            await a.tell("agent:worker", Message("job", {"n": n}))  # they wait in the queue
        async with node(amqp_scope.transport(), "c") as c:
            await c.spawn(standby.agent("worker"), id="worker")
            try:
                await standby.wait_for(5, timeout=5)
            except TimeoutError:
                pytest.fail(
                    "the standby got nothing: b consumes agent.worker again since reconnecting"
                )
        assert b.dead_letters.count == 0
    assert [m.payload["n"] for m in standby.messages] == list(range(5))


# -- 5. a broker that stops answering ------------------------------------------------------


async def test_send_fails_after_publish_timeout_when_the_broker_stops_answering(
    amqp_scope: AmqpScope, proxy: FaultProxy
) -> None:
    publish_timeout = 1.0
    probe = Probe()
    sending = proxied_transport(amqp_scope, proxy, publish_timeout=publish_timeout)
    async with node(sending, "a") as a, node(amqp_scope.transport(), "b") as b:
        await b.spawn(probe.agent(), id="target")
        await a.tell("agent:target", Message("before"))
        await probe.wait_for(1)
        proxy.blackhole()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with capture_logs() as logs:
            try:
                async with asyncio.timeout(2 * publish_timeout + 5):
                    for attempt in range(2):  # one outage, however many sends it fails
                        with pytest.raises(TransportError, match="did not confirm"):
                            await a.tell("agent:target", Message(f"blackholed-{attempt}"))
                        elapsed = loop.time() - started
                        started = loop.time()
            finally:
                proxy.restore()  # let the nodes shut down cleanly
            assert publish_timeout * 0.9 <= elapsed <= publish_timeout + 1.0
            assert sending.outage.down
            # Once the broker answers again the node sends as before.
            await a.tell("agent:target", Message("after"))
            await probe.wait_for(2)
            assert not sending.outage.down  # its end is logged (an info line)
    # One warning for the outage, however many sends it failed (its end is an info line).
    warned = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warned == ["broker_unavailable"], [e["event"] for e in logs]


# -- 6. unknown addresses ------------------------------------------------------------------


async def test_an_address_nobody_serves_raises_unknown_agent_at_once(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    async with node(amqp_scope.transport(publish_timeout=5.0), "a") as a:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UnknownAgent, match="agent:nobody"):
            await a.tell("agent:nobody", Message("hello"))
        with pytest.raises(UnknownAgent, match="type:nobody"):
            await a.tell("type:nobody", Message("hello"))
        # The mandatory publish came back: no waiting out the publish timeout.
        assert loop.time() - started < 2.0
        assert a.dead_letters.by_reason["unknown_address"] == 2
    # Returned to the sender, not parked in the broker's dead-letter queue.
    assert await queue_depth(broker, amqp_scope.prefix + "agents.dead_letter") == 0


# -- 7. handing an agent's queue to a standby ----------------------------------------------


def handover_agents(
    handled: list[tuple[str, int]], gate: asyncio.Event, busy: asyncio.Event
) -> tuple[type[Agent], type[Agent]]:
    """The same agent id on two nodes; the first holds its first message until `gate` opens."""

    def make(where: str) -> type[Agent]:
        class Worker(Agent):
            type = "handover"

            async def handle_message(self, message: Message) -> HandlerResult:
                busy.set()
                if where == "first":
                    await gate.wait()  # hold the first message so the rest queue up here
                handled.append((where, message.payload["n"]))
                return None

        return Worker

    return make("first"), make("standby")


async def wait_for_mailbox(rt: Runtime, agent_id: str, length: int) -> None:
    def full() -> bool:
        cell = rt.local_cell(agent_id)
        return cell is not None and len(cell.mailbox) >= length

    await eventually(full)


async def test_an_agent_stopped_on_one_node_leaves_its_queued_messages_to_a_standby(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    handled: list[tuple[str, int]] = []
    gate, busy = asyncio.Event(), asyncio.Event()
    first_agent, standby_agent = handover_agents(handled, gate, busy)
    total = 30
    queue = amqp_scope.prefix + "agent.worker"
    async with (
        node(amqp_scope.transport(), "client") as client,
        node(amqp_scope.transport(), "first") as first,
        node(amqp_scope.transport(), "standby") as standby,
    ):
        await first.spawn(first_agent, id="worker")
        await standby.spawn(standby_agent, id="worker")
        for n in range(total):
            await client.tell("agent:worker", Message("job", {"n": n}))
        async with asyncio.timeout(5):
            await busy.wait()
        # Everything after the first message waits in the first node's mailbox (prefetched,
        # not acknowledged) when the agent stops there.
        await wait_for_mailbox(first, "worker", total - 1)
        stopping = asyncio.ensure_future(first.stop_agent("worker"))
        gate.set()  # the message in hand finishes; the rest must go to the standby
        await stopping
        await eventually(lambda: len(handled) >= total)
        await wait_until_drained(broker, queue, [first, standby])
        await standby.settle()
        dead = first.dead_letters.count + standby.dead_letters.count
    assert sorted(n for _, n in handled) == list(range(total)), "lost or handled twice"
    assert handled[0] == ("first", 0)
    assert {where for where, _ in handled[1:]} == {"standby"}
    assert [n for _, n in handled] == list(range(total)), "the handover broke the order"
    assert dead == 0
    assert await queue_depth(broker, amqp_scope.prefix + "agents.dead_letter") == 0


async def test_a_message_arriving_while_an_agent_stops_goes_to_the_standby(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    handled: list[tuple[str, int]] = []
    gate, busy = asyncio.Event(), asyncio.Event()
    first_agent, standby_agent = handover_agents(handled, gate, busy)
    queue = amqp_scope.prefix + "agent.worker"
    async with (
        node(amqp_scope.transport(), "client") as client,
        node(amqp_scope.transport(), "first") as first,
        node(amqp_scope.transport(), "standby") as standby,
    ):
        await first.spawn(first_agent, id="worker")
        await standby.spawn(standby_agent, id="worker")
        await client.tell("agent:worker", Message("job", {"n": 0}))
        async with asyncio.timeout(5):
            await busy.wait()
        # The agent is stopping (waiting for its handler) while a new message comes in.
        stopping = asyncio.ensure_future(first.stop_agent("worker"))
        cell = first.local_cell("worker")
        assert cell is not None
        # Stopping: the cell waits for its handler and its node still consumes the queue.
        await eventually(lambda: cell.status == "stopped")
        await client.tell("agent:worker", Message("job", {"n": 1}))

        # Wait until the broker handed it to a consumer (either node) before letting go.
        async def delivered() -> bool:
            return await queue_depth(broker, queue) == 0

        await eventually(delivered)
        gate.set()
        await stopping
        await eventually(lambda: len(handled) >= 2 or first.dead_letters.count > 0)
        await wait_until_drained(broker, queue, [first, standby])
        await standby.settle()
        first_dead = dict(first.dead_letters.by_reason)
    assert first_dead == {}, "a message for a standby was dead-lettered"
    assert sorted(handled) == [("first", 0), ("standby", 1)]
    assert await queue_depth(broker, amqp_scope.prefix + "agents.dead_letter") == 0


# -- 8. messages other AMQP clients publish ------------------------------------------------


async def publish_raw(
    connection: AbstractConnection,
    prefix: str,
    body: bytes,
    routing_key: str,
    **properties: Any,
) -> None:
    """Publish as another AMQP client would: a confirmed publish of bare bytes."""
    channel = await connection.channel(publisher_confirms=True)
    try:
        exchange = await channel.get_exchange(prefix + "agents.direct")
        await exchange.publish(
            aio_pika.Message(body, **properties), routing_key, mandatory=True, timeout=5
        )
    finally:
        await channel.close()


async def test_a_message_without_an_id_gets_a_stable_one_so_its_second_copy_is_a_duplicate(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    probe = Probe()
    no_id = json.dumps({"type": "charge", "target": "agent:target", "payload": {"n": 1}})
    with_property = json.dumps({"type": "charge", "target": "agent:target", "payload": {"n": 2}})
    exchange = amqp_scope.prefix + "agents.direct"
    async with node(amqp_scope.transport(), "b") as b:
        await b.spawn(probe.agent(), id="target")
        for _ in range(2):  # the same message twice, as a redelivery or a re-send would be
            await publish_bare(amqp_scope.url, exchange, "agent.target", no_id.encode())
            await publish_raw(
                broker,
                amqp_scope.prefix,
                with_property.encode(),
                "agent.target",
                message_id="client-42",
            )
        await wait_until_drained(broker, amqp_scope.prefix + "agent.target", [b])
        await b.settle()
        duplicates = b.duplicates
    assert [(m.payload["n"], m.id) for m in probe.messages] == [
        (1, body_id(no_id.encode())),
        (2, "client-42"),
    ]
    assert duplicates == 2


async def test_a_client_of_the_original_design_is_served_and_gets_its_replies(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    """Bare-id sender, bare or missing target, naive timestamp, missing optional fields."""
    got: list[Message] = []

    class Echo1(Agent):
        type = "echo"

        async def handle_message(self, message: Message) -> HandlerResult:
            got.append(message)
            return message.reply({"echo": message.payload})

    prefix, exchange = amqp_scope.prefix, amqp_scope.prefix + "agents.direct"
    full = {
        "id": "6a0b1f7e-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "type": "ping",
        "sender": "legacy-client",
        "target": "echo-1",
        "payload": {"n": 1},
        "created_at": "2024-05-01T12:00:00.123456",
        "metadata": {},
        "trace_id": None,
    }
    sparse = {"type": "ping", "sender": "legacy-client", "payload": {"n": 2}}
    channel = await broker.channel()
    async with node(amqp_scope.transport(), "b") as b:
        await b.spawn(Echo1, id="echo-1")
        # The original client's own queue, as its design declares it: agent.<id>.
        inbox = await channel.declare_queue(prefix + "agent.legacy-client", durable=True)
        amqp_scope.extra_queues.add(inbox.name)
        await inbox.bind(exchange, routing_key="agent.legacy-client")
        await publish_bare(amqp_scope.url, exchange, "agent.echo-1", json.dumps(full).encode())
        await publish_bare(amqp_scope.url, exchange, "type.echo", json.dumps(sparse).encode())
        bad = {"type": 7, "sender": "legacy-client", "payload": {}}  # still invalid
        await publish_bare(amqp_scope.url, exchange, "type.echo", json.dumps(bad).encode())
        replies = []
        async with asyncio.timeout(10), inbox.iterator() as waiting:
            async for incoming in waiting:
                await incoming.ack()
                replies.append(json.loads(incoming.body))
                if len(replies) == 2:
                    break
        [letter] = await take_dead_letters(broker, prefix, 1)
        await wait_until_drained(broker, prefix + "agent_type.echo", [b])
    await channel.close()
    assert [(m.sender, m.target, m.payload["n"]) for m in got] == [
        ("agent:legacy-client", "agent:echo-1", 1),
        ("agent:legacy-client", "type:echo", 2),
    ]
    assert got[0].id == full["id"]
    assert got[0].created_at.isoformat() == "2024-05-01T12:00:00.123456+00:00"
    assert sorted(r["payload"]["echo"]["n"] for r in replies) == [1, 2]
    assert {r["target"] for r in replies} == {"agent:legacy-client"}
    assert {r["correlation_id"] for r in replies} == {m.id for m in got}
    assert letter.headers["x-mas-reason"] == "invalid_message"
    assert json.loads(letter.body) == bad


# -- 9. dead letters the runtime records by itself -----------------------------------------


class Reporter(Agent):
    """Returns what nobody can take: a message with no target (its sender is nobody) and one
    to an agent no node hosts."""

    type = "reporter"
    gate: asyncio.Event | None = None

    async def handle_message(self, message: Message) -> HandlerResult:
        if type(self).gate is not None:
            await type(self).gate.wait()
        if message.type == "one":
            return Message("report", {"n": message.payload["n"]})
        return [Message("report", {"n": 0}), Message("note", target="agent:nobody")]


async def test_dead_letters_no_delivery_carries_reach_the_broker_dead_letter_queue(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    """An unroutable reply, and a local message that ran out of attempts."""

    class Poisoned(Agent):
        type = "poisoned"

        async def handle_message(self, message: Message) -> HandlerResult:
            raise ValueError("indigestible")

    retry = {"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.05, "jitter": 0.1}
    async with (
        node(amqp_scope.transport(), "a") as a,
        node(amqp_scope.transport(), "b", retry=retry) as b,
    ):
        await b.spawn(Reporter, id="reporter")
        await b.spawn(Poisoned, id="poisoned")
        await a.tell("agent:reporter", Message("both"))  # from outside: no sender, no reply_to
        await b.tell("agent:poisoned", Message("eat"))  # local: never crosses the broker
        letters = await take_dead_letters(broker, amqp_scope.prefix, 3)
        recorded = dict(b.dead_letters.by_reason)
    seen = sorted(
        (
            str(letter.headers["x-mas-reason"]),
            str(letter.headers["x-mas-agent-id"]),
            str(letter.headers["x-mas-routing-key"]),
            Message.from_json(letter.body).type,
        )
        for letter in letters
    )
    assert seen == [
        ("max_attempts", "poisoned", "agent.poisoned", "eat"),
        ("unknown_address", "reporter", "", "report"),
        ("unknown_address", "reporter", "agent.nobody", "note"),
    ]
    assert recorded == {"max_attempts": 1, "unknown_address": 2}  # and in b's own record


async def test_a_dead_letter_the_broker_cannot_take_is_logged_and_the_agent_goes_on(
    amqp_scope: AmqpScope, proxy: FaultProxy
) -> None:
    reporter = type("GatedReporter", (Reporter,), {"gate": asyncio.Event()})
    started = Probe()
    async with (
        node(amqp_scope.transport(), "a") as a,
        node(proxied_transport(amqp_scope, proxy, publish_timeout=0.5), "b") as b,
    ):
        await b.spawn(reporter, id="reporter")
        await b.spawn(started.agent(), id="probe")
        await a.tell("agent:reporter", Message("one", {"n": 1}))
        cell = b.local_cell("reporter")
        assert cell is not None
        await eventually(lambda: cell.current is not None)  # in the handler, at the gate
        proxy.blackhole()
        try:
            with capture_logs() as logs:
                reporter.gate.set()
                await eventually(lambda: any(e["event"] == "dead_letter_not_kept" for e in logs))
        finally:
            proxy.restore()
        # The drain task survived: the same agent handles the next message.
        await a.tell("agent:reporter", Message("one", {"n": 2}))
        await eventually(lambda: b.dead_letters.count == 2, timeout=10)
        assert b.failure is None
    [event] = [e for e in logs if e["event"] == "dead_letter_not_kept"]
    assert event["agent_id"] == "reporter" and event["error_type"] == "TransportError"
    assert event["reason"] == "unknown_address"


# -- 10. bounded dead letters --------------------------------------------------------------


async def test_dead_letters_keep_the_newest_within_the_bound_with_bodies_cut_to_the_cap(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    bounded = amqp_scope.transport(dead_letter_max_body=1024, dead_letter_max_length=3)
    poison = [f"{n:02d}".encode() + b"\x80" * 5000 for n in range(5)]  # not JSON: invalid
    async with node(bounded, "b") as b:
        await b.spawn(Probe().agent(), id="target")
        for body in poison:
            await publish_raw(broker, amqp_scope.prefix, body, "agent.target")
        await wait_until_drained(broker, amqp_scope.prefix + "agent.target", [b])
        letters = await take_dead_letters(broker, amqp_scope.prefix, 3)  # and no more
    assert [letter.body[:2] for letter in letters] == [b"02", b"03", b"04"]  # oldest dropped
    assert [letter.body for letter in letters] == [body[:1024] for body in poison[2:]]
    for letter in letters:
        assert letter.headers["x-mas-truncated"] is True
        assert letter.headers["x-mas-body-size"] == 5002
        assert letter.headers["x-mas-reason"] == "invalid_message"


async def test_a_dead_letter_leaves_the_queue_after_its_ttl(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    dead_letters = amqp_scope.prefix + "agents.dead_letter"
    async with node(amqp_scope.transport(dead_letter_ttl=1.0), "b") as b:
        await b.spawn(Probe().agent(), id="target")
        small = b'{"type": "x", "payload": 3}'  # invalid, and under the body cap: kept whole
        await publish_raw(broker, amqp_scope.prefix, small, "agent.target")

        async def depth(n: int) -> bool:
            return await queue_depth(broker, dead_letters) == n

        await eventually(lambda: depth(1))
        await eventually(lambda: depth(0), timeout=10)


async def test_an_unbounded_dead_letter_queue_from_before_does_not_stop_a_node_starting(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    """Redeclaring with bounds would fail (PRECONDITION_FAILED): the node uses it as it is."""
    dead_letters = amqp_scope.prefix + "agents.dead_letter"
    channel = await broker.channel()
    await channel.declare_queue(dead_letters, durable=True)  # as an older mas declared it
    amqp_scope.extra_queues.add(dead_letters)
    await channel.close()
    with capture_logs() as logs:
        async with node(amqp_scope.transport(), "b") as b:
            await b.spawn(Probe().agent(), id="target")
            await publish_raw(broker, amqp_scope.prefix, b"not json", "agent.target")
            # Published on the node's own channel: the refused declaration did not close it.
            [letter] = await take_dead_letters(broker, amqp_scope.prefix, 1)
    assert letter.body == b"not json"
    [warning] = [e for e in logs if e["event"] == "amqp_dead_letter_queue_not_bounded"]
    assert warning["log_level"] == "warning"
    assert "PRECONDITION_FAILED" in warning["error"]
    assert (
        "rabbitmqctl set_policy" in warning["hint"] and '"overflow":"drop-head"' in warning["hint"]
    )


async def test_a_declaration_the_broker_refuses_at_start_is_a_transport_error(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    """Connecting works, declaring does not: still mas's error, not aio-pika's."""
    channel = await broker.channel()
    # Of another type than mas declares it: the broker refuses with PRECONDITION_FAILED.
    await channel.declare_exchange(amqp_scope.prefix + "agents.direct", "fanout", durable=True)
    await channel.close()
    transport = amqp_scope.transport()
    with pytest.raises(TransportError, match="PRECONDITION_FAILED") as caught:
        async with node(transport, "refused"):
            pass
    assert "setting up queues on RabbitMQ" in str(caught.value)
    assert isinstance(caught.value.__cause__, aio_pika.exceptions.AMQPError)


# -- 11. a node takes only what its mailboxes hold -------------------------------------------


async def test_each_agent_queue_prefetches_its_mailbox_capacity_also_after_a_reconnection(
    amqp_scope: AmqpScope, proxy: FaultProxy
) -> None:
    """One channel per prefetch count: a robust channel re-applies the QoS last set on it to
    every consumer it restores, so sharing one would give them all the last count."""
    expected = {
        "agent.small": [3],
        "agent.large": [7],
        "agent.plain": [256],  # the default mailbox (1000) is over MAS_AMQP__PREFETCH
        "agent_type.sized": [3],  # bounded by the first local agent of the type
        "agent_type.plain": [256],
    }
    small, plain = Probe(), Probe()
    async with (
        node(amqp_scope.transport(), "a") as a,
        node(proxied_transport(amqp_scope, proxy), "b") as b,
    ):
        await b.spawn(small.agent("sized"), id="small", mailbox_capacity=3)
        await b.spawn(Probe().agent("sized"), id="large", mailbox_capacity=7)
        await b.spawn(plain.agent("plain"), id="plain")

        def prefetch() -> dict[str, list[int]]:
            found = consumer_prefetch(amqp_scope.url, amqp_scope.prefix)
            return {q: counts for q, counts in found.items() if not q.startswith("node.")}

        assert prefetch() == expected
        assert proxy.cut() == 1
        await a.tell("agent:small", Message("after-cut"))
        await a.tell("agent:plain", Message("after-cut"))
        await small.wait_for(1, timeout=10)
        await plain.wait_for(1, timeout=10)
        await eventually(lambda: prefetch() == expected, timeout=20, interval=0.5)


async def test_a_message_resent_from_an_outbox_is_checked_against_the_record(
    amqp_scope: AmqpScope, broker: AbstractConnection, tmp_path: Path
) -> None:
    """A relay re-sends what a dead node's outbox held: a copy handled before is skipped,
    and while the record cannot be read the copy waits in the broker, unhandled."""
    probe = Probe()
    settings = Settings(
        persist=True,
        database_url=SecretStr(f"sqlite+aiosqlite:///{tmp_path}/mas.db"),
        log_level="WARNING",
    )
    store = await Store.open(settings.database_url.get_secret_value(), migrate=True)
    try:
        async with (
            node(amqp_scope.transport(), "a") as a,
            Runtime(settings, transport=amqp_scope.transport(), node_id="b") as b,
        ):
            await b.spawn(probe.agent(), id="target")
            handled = Message("charge", {"n": 1}, target="agent:target")
            await amqp(a).send(handled)
            await probe.wait_for(1)
            await b.settle()
            await amqp(a).send(handled, resent=True)  # handled before: the record says so
            await eventually(lambda: b.duplicates == 1, timeout=10)
            async with store.writing() as conn:
                await conn.exec_driver_sql("ALTER TABLE messages RENAME TO messages_away")
            unknown = Message("charge", {"n": 2}, target="agent:target")
            await amqp(a).send(unknown, resent=True)
            await eventually(lambda: b.deferred >= 2, timeout=10)  # offered, put back, twice
            assert [m.payload["n"] for m in probe.messages] == [1]
            async with store.writing() as conn:
                await conn.exec_driver_sql("ALTER TABLE messages_away RENAME TO messages")
            await probe.wait_for(2, timeout=10)
            await b.settle()
    finally:
        await store.close()
    assert [m.payload["n"] for m in probe.messages] == [1, 2]


async def test_retiring_an_agent_keeps_a_queue_someone_consumes_and_empties_an_orphan(
    amqp_scope: AmqpScope, broker: AbstractConnection
) -> None:
    """An agent gone for good gives up its queue: what waited there is dead-lettered and
    a later send fails at once; a queue a node still consumes is left alone."""
    probe = Probe()
    async with node(amqp_scope.transport(), "a") as a, node(amqp_scope.transport(), "b") as b:
        await b.spawn(probe.agent(), id="x")
        assert await a.retire_agent("x") is False  # b consumes it
        await b.stop_agent("x")
        for n in range(2):
            await a.tell("agent:x", Message("late", {"n": n}))  # queued: nobody consumes
        assert await a.retire_agent("x") is True
        letters = await take_dead_letters(broker, amqp_scope.prefix, 2)
        with pytest.raises(UnknownAgent):
            await a.tell("agent:x", Message("later", {}))
        assert await a.retire_agent("x") is True  # nothing left to retire: still done
    assert [json.loads(letter.body)["payload"]["n"] for letter in letters] == [0, 1]
    assert {letter.headers["x-mas-reason"] for letter in letters} == {"agent_stopped"}
    assert probe.messages == []


async def test_a_crash_of_the_receiving_pump_fails_the_runtime(amqp_scope: AmqpScope) -> None:
    # Errors handling one delivery are logged and the pump goes on; an error that escapes
    # the pump (here a BaseException, as a bug could raise) leaves the node deaf: it fails.
    class PumpBroke(BaseException):
        pass

    transport = amqp_scope.transport()

    async def broken_receive(incoming: object) -> None:
        raise PumpBroke("the pump broke")

    with pytest.raises(PumpBroke):
        async with node(transport, "deaf") as rt:
            await rt.spawn(Echo, id="echo")
            transport._receive = broken_receive  # type: ignore[method-assign]  # fault injection
            await transport.send(Message("hello", target="agent:echo"))
            await eventually(lambda: rt.failure is not None, 5)
