"""Actor semantics across nodes that share a transport; identical on every transport."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from mas import Agent, HandlerError, HandlerResult, Message, UnknownAgent
from mas.testing import Probe, crashing, eventually

from .conftest import Cluster, settle_all

pytestmark = pytest.mark.anyio


class Echo(Agent):
    type = "echo"

    async def handle_message(self, message: Message) -> HandlerResult:
        return message.reply({"echo": message.payload, "by": self.id})


async def test_tell_reaches_an_agent_hosted_by_another_node(cluster: Cluster) -> None:
    probe = Probe()
    async with cluster(2) as (a, b):
        await b.spawn(probe.agent(), id="remote")
        await a.ref("remote").tell(Message("hello", {"from": "a"}))
        await settle_all([a, b])
    assert [(m.type, m.payload) for m in probe.messages] == [("hello", {"from": "a"})]


async def test_ask_across_nodes_returns_the_reply(cluster: Cluster) -> None:
    async with cluster(2) as (a, b):
        await b.spawn(Echo, id="echo")
        reply = await a.ask("agent:echo", Message("ping", {"n": 1}), timeout=2)
    assert reply.payload == {"echo": {"n": 1}, "by": "echo"}
    assert reply.correlation_id is not None


async def test_type_address_spreads_work_over_the_nodes_hosting_that_type(cluster: Cluster) -> None:
    seen: Counter[str] = Counter()

    class Worker(Agent):
        type = "worker"

        async def handle_message(self, message: Message) -> HandlerResult:
            seen[self.id] += 1
            return None

    async with cluster(3) as (gateway, w1, w2):
        await w1.spawn(Worker, id="worker-1")
        await w2.spawn(Worker, id="worker-2")
        for n in range(10):
            await gateway.tell("type:worker", Message("job", {"n": n}))
        await settle_all([gateway, w1, w2])
    assert sum(seen.values()) == 10
    assert set(seen) == {"worker-1", "worker-2"}


async def test_topic_broadcast_reaches_subscribers_on_every_node_once(cluster: Cluster) -> None:
    got: list[tuple[str, int]] = []

    class Listener(Agent):
        type = "listener"
        topics = ("news.*",)

        async def handle_message(self, message: Message) -> HandlerResult:
            got.append((self.id, message.payload["n"]))
            return None

    async with cluster(3) as (a, b, c):
        await a.spawn(Listener, id="on-a")
        await b.spawn(Listener, id="on-b")
        await c.publish("news.today", Message("news", {"n": 1}))
        await a.publish("news.today", Message("news", {"n": 2}))
        await settle_all([a, b, c])
    assert sorted(got) == [("on-a", 1), ("on-a", 2), ("on-b", 1), ("on-b", 2)]


async def test_an_address_no_node_serves_is_an_error_and_a_dead_letter(cluster: Cluster) -> None:
    async with cluster(2) as (a, _b):
        with pytest.raises(UnknownAgent):
            await a.ref("ghost").tell(Message("boo"))
        assert a.dead_letters.by_reason["unknown_address"] == 1


async def test_poison_message_from_another_node_fails_the_asker_after_retries(
    cluster: Cluster,
) -> None:
    factory, counters = crashing(0, agent_type="poisoned", on_types=("poison",))
    async with cluster(2) as (a, b):
        await b.spawn(factory, id="p")
        with pytest.raises(HandlerError) as caught:
            await a.ask("agent:p", Message("poison"), timeout=5)
        reply = await a.ask("agent:p", Message("fine", {"ok": 1}), timeout=5)
    assert caught.value.attempts == 3
    assert counters["crashes"] == 3
    assert reply.payload == {"ok": 1}
    assert b.dead_letters.by_reason["max_attempts"] == 1


async def test_the_same_message_id_sent_twice_is_handled_once(cluster: Cluster) -> None:
    probe = Probe()
    async with cluster(2) as (a, b):
        await b.spawn(probe.agent(), id="p")
        await a.tell("agent:p", Message("charge", {"cents": 100}, id="payment-1"))
        await a.tell("agent:p", Message("charge", {"cents": 100}, id="payment-1"))
        await settle_all([a, b])
        assert b.duplicates == 1
    assert len(probe.messages) == 1


async def test_messages_from_one_sender_keep_their_order_across_nodes(cluster: Cluster) -> None:
    probe = Probe()
    async with cluster(2) as (a, b):
        await b.spawn(probe.agent(), id="p")
        for n in range(100):
            await a.tell("agent:p", Message("seq", {"n": n}))
        await settle_all([a, b])
    assert [m.payload["n"] for m in probe.messages] == list(range(100))


async def test_one_activation_per_agent_id_with_failover_to_a_standby(cluster: Cluster) -> None:
    handled_by: list[str] = []

    def make(node: str) -> type[Agent]:
        class Singleton(Agent):
            type = "singleton"

            async def handle_message(self, message: Message) -> HandlerResult:
                handled_by.append(node)
                return None

        return Singleton

    async with cluster(3) as (client, first, standby):
        await first.spawn(make("first"), id="the-one")
        await standby.spawn(make("standby"), id="the-one")
        for _ in range(3):
            await client.tell("agent:the-one", Message("work"))
        await settle_all([client, first, standby])
        assert handled_by == ["first"] * 3
        await first.shutdown()  # the active consumer leaves
        await client.tell("agent:the-one", Message("work"))
        await settle_all([client, standby])
    assert handled_by == ["first"] * 3 + ["standby"]


async def test_a_topic_message_retried_on_its_node_is_settled_with_the_broker(
    cluster: Cluster,
) -> None:
    factory, counters = crashing(1, agent_type="flaky_listener", reply=False)
    async with cluster(2) as (a, b):
        ref = await b.spawn(factory, id="listener")
        cell = b.local_cell(ref.id)
        assert cell is not None
        await cell.ctx.subscribe("alerts.*")
        await a.publish("alerts.disk", Message("alert", {"free": 1}))
        await settle_all([a, b])
        assert counters == {"handled": 1, "crashes": 1, "starts": 2, "stops": 1}
        assert not b.transport.unacked  # type: ignore[attr-defined]


# -- a worker takes only what its mailboxes hold; the rest waits in the broker -------------


def gated(handled: list[str], gate: asyncio.Event, busy: asyncio.Event) -> type[Agent]:
    """Holds its first message until `gate` opens; fails the first try of each `remote` one."""
    tried: set[str] = set()

    class Gated(Agent):
        type = "gated"

        async def handle_message(self, message: Message) -> HandlerResult:
            busy.set()
            await gate.wait()
            if message.type == "remote" and message.id not in tried:
                tried.add(message.id)
                raise ValueError("first try fails: its attempts are counted from 1")
            handled.append(message.payload["name"])
            return None

    return Gated


@pytest.mark.parametrize("overflow", ["reject", "block"])
async def test_deliveries_a_full_mailbox_cannot_take_wait_and_are_handled_later(
    cluster: Cluster, overflow: str
) -> None:
    handled: list[str] = []
    gate, busy = asyncio.Event(), asyncio.Event()
    retry = {"max_attempts": 2, "base_delay": 0.01, "max_delay": 0.05}
    async with asyncio.timeout(60), cluster(2, retry=retry) as (a, b):
        await b.spawn(gated(handled, gate, busy), id="busy", mailbox_capacity=2, overflow=overflow)
        await b.tell("agent:busy", Message("local", {"name": "l0"}))
        await busy.wait()  # l0 is in the handler; l1, l2 fill the mailbox
        for n in (1, 2):
            await b.tell("agent:busy", Message("local", {"name": f"l{n}"}))
        for n in range(4):  # from another node: they find the mailbox full
            await a.tell("agent:busy", Message("remote", {"name": f"r{n}"}))
        await eventually(lambda: b.deferred >= 1, timeout=10)
        gate.set()
        await settle_all([a, b])
        dead = a.dead_letters.count + b.dead_letters.count
    assert sorted(handled) == ["l0", "l1", "l2", "r0", "r1", "r2", "r3"]
    assert dead == 0, "a message that did not fit was dead-lettered (or ran out of attempts)"


async def test_a_full_block_mailbox_does_not_stall_the_other_agents_of_its_node(
    cluster: Cluster,
) -> None:
    handled: list[str] = []
    gate, busy = asyncio.Event(), asyncio.Event()
    fast = Probe()
    async with asyncio.timeout(60), cluster(2) as (a, b):
        await b.spawn(gated(handled, gate, busy), id="slow", mailbox_capacity=1, overflow="block")
        await b.spawn(fast.agent(), id="fast")
        for n in range(4):
            await a.tell("agent:slow", Message("work", {"name": f"s{n}"}))
        for n in range(5):
            await a.tell("agent:fast", Message("work", {"name": f"f{n}"}))
        try:
            await fast.wait_for(5, timeout=10)
        except TimeoutError:
            pytest.fail("the agent behind a full `block` mailbox got nothing: head-of-line block")
        assert handled == []  # slow is still held at its gate
        gate.set()
        await settle_all([a, b])
    assert sorted(handled) == ["s0", "s1", "s2", "s3"]
    assert [m.payload["name"] for m in fast.messages] == [f"f{n}" for n in range(5)]


async def test_a_drop_oldest_mailbox_keeps_the_newest_deliveries(cluster: Cluster) -> None:
    """No prefetch bound holds its messages back: the stale ones go to dead letters."""
    handled: list[str] = []
    gate, busy = asyncio.Event(), asyncio.Event()
    async with asyncio.timeout(60), cluster(2) as (a, b):
        await b.spawn(
            gated(handled, gate, busy), id="latest", mailbox_capacity=2, overflow="drop_oldest"
        )
        await b.tell("agent:latest", Message("local", {"name": "l0"}))
        await busy.wait()
        for n in range(5):
            await a.tell("agent:latest", Message("price", {"name": f"p{n}"}))
        await eventually(lambda: b.dead_letters.count == 3, timeout=10)
        gate.set()
        await settle_all([a, b])
        dropped = [letter.message.payload["name"] for letter in b.dead_letters.recent]
        reasons = dict(b.dead_letters.by_reason)
    assert handled == ["l0", "p3", "p4"]
    assert dropped == ["p0", "p1", "p2"]
    assert reasons == {"mailbox_overflow": 3}
    assert b.deferred == 0
