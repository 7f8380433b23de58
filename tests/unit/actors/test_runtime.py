"""The runtime: routing, ask, errors at the call site, death watch, traces, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mas import (
    Agent,
    AgentStartError,
    AgentStopped,
    AskTimeout,
    ConfigError,
    DuplicateAgent,
    HandlerResult,
    InvalidAddress,
    InvalidMessage,
    Message,
    MessageTooLarge,
    Runtime,
    RuntimeNotRunning,
    Settings,
    Terminated,
    UnknownAgent,
)
from mas.testing import Probe, eventually
from mas.transports.memory import MemoryBroker, MemoryTransport

pytestmark = pytest.mark.anyio

MakeRuntime = Callable[..., Runtime]  # the `make_runtime` fixture (conftest.py)


class Echo(Agent):
    type = "echo"

    async def handle_message(self, message: Message) -> HandlerResult:
        return message.reply(dict(message.payload))


class Silent(Agent):
    type = "silent"

    async def handle_message(self, message: Message) -> HandlerResult:
        return None


class Stuck(Agent):
    """Never finishes a handler unless cancelled."""

    type = "stuck"
    entered = asyncio.Event()

    async def handle_message(self, message: Message) -> HandlerResult:
        Stuck.entered.set()
        await asyncio.Event().wait()
        return None


async def test_the_quickstart_from_the_design_works_with_defaults() -> None:
    class Greeter(Agent):
        type = "greeter"

        async def handle_message(self, message: Message) -> Message:
            return message.reply(payload={"text": f"hello {message.payload['name']}"})

    async with Runtime() as rt:
        ref = await rt.spawn(Greeter, id="g1")
        reply = await ref.ask(Message(type="greet", payload={"name": "ada"}), timeout=1)
    assert reply.payload["text"] == "hello ada"
    assert reply.sender == "agent:g1"


async def test_ask_times_out_with_ask_timeout_which_is_a_timeout_error(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime() as rt:
        ref = await rt.spawn(Silent, id="s")
        with pytest.raises(AskTimeout) as caught:
            await ref.ask(Message("q"), timeout=0.05)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.address == "agent:s"


async def test_ask_to_a_stopped_agent_raises_agent_stopped(make_runtime: MakeRuntime) -> None:
    async with make_runtime() as rt:
        ref = await rt.spawn(Echo, id="e")
        await ref.stop()
        with pytest.raises(AgentStopped):
            await ref.ask(Message("q"), timeout=1)
        with pytest.raises(AgentStopped):
            await ref.tell(Message("q"))


async def test_a_pending_ask_fails_when_its_agent_stops(make_runtime: MakeRuntime) -> None:
    Stuck.entered = asyncio.Event()
    async with make_runtime(shutdown_timeout=0.05) as rt:
        stuck = await rt.spawn(Stuck, id="stuck")
        await stuck.tell(Message("block"))
        await asyncio.wait_for(Stuck.entered.wait(), 1)
        pending = asyncio.create_task(stuck.ask(Message("queued"), timeout=5))
        await asyncio.wait({pending}, timeout=0.01)
        await stuck.stop()  # cancels the stuck handler after 0.05s, dead-letters the queue
        with pytest.raises(AgentStopped):
            await asyncio.wait_for(pending, 2)


async def test_unknown_address_raises_and_is_counted_as_a_dead_letter(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime() as rt:
        with pytest.raises(UnknownAgent) as caught:
            await rt.tell("agent:nobody", Message("hello"))
        assert "spawn it first" in str(caught.value)
        with pytest.raises(UnknownAgent):
            await rt.tell("type:no_such_type", Message("hello"))
        assert rt.dead_letters.by_reason["unknown_address"] == 2


async def test_routes_locally_says_whether_this_node_handles_an_address(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime() as rt:
        ref = await rt.spawn(Echo, id="e")
        assert rt.routes_locally("agent:e") and rt.routes_locally("type:echo")
        assert not rt.routes_locally("agent:x") and not rt.routes_locally("type:silent")
        assert not rt.routes_locally("topic:news.today")  # fans out to every node
        await ref.stop()
        assert not rt.routes_locally("agent:e") and not rt.routes_locally("type:echo")


async def test_bad_addresses_are_rejected_at_the_call_site(make_runtime: MakeRuntime) -> None:
    async with make_runtime() as rt:
        for bad in ("nobody", "agent:", "queue:x", "topic:a.*"):
            with pytest.raises(InvalidAddress):
                await rt.tell(bad, Message("hello"))


async def test_duplicate_agent_id_is_a_typed_error(make_runtime: MakeRuntime) -> None:
    async with make_runtime() as rt:
        await rt.spawn(Echo, id="same")
        with pytest.raises(DuplicateAgent, match="choose another id"):
            await rt.spawn(Echo, id="same")


async def test_a_failing_start_is_raised_from_spawn_and_frees_the_id(
    make_runtime: MakeRuntime,
) -> None:
    class Broken(Agent):
        async def start(self) -> None:
            raise OSError("no database")

    async with make_runtime() as rt:
        with pytest.raises(AgentStartError, match="no database"):
            await rt.spawn(Broken, id="b")
        assert rt.local_cell("b") is None
        await rt.spawn(Echo, id="b")


async def test_spawn_refuses_something_that_is_not_an_agent(make_runtime: MakeRuntime) -> None:
    async with make_runtime() as rt:
        with pytest.raises(ConfigError, match="Agent"):
            await rt.spawn(lambda: object(), id="x")  # type: ignore[arg-type, return-value]


async def test_using_a_runtime_that_is_not_started_is_a_clear_error() -> None:
    rt = Runtime(Settings(log_level="CRITICAL"))
    with pytest.raises(RuntimeNotRunning, match="async with Runtime"):
        await rt.spawn(Echo)


async def test_tell_after_shutdown_is_refused(make_runtime: MakeRuntime) -> None:
    async with make_runtime() as rt:
        await rt.spawn(Echo, id="e")
    with pytest.raises(RuntimeNotRunning):
        await rt.tell("agent:e", Message("late"))


async def test_non_json_payload_breaks_in_tests_as_it_would_on_the_wire(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime(serialize_messages=True) as rt:  # a plain Runtime's default is off
        ref = await rt.spawn(Echo, id="e")
        with pytest.raises(InvalidMessage, match="JSON"):
            await ref.tell(Message("bad", {"when": object()}))


async def test_a_message_over_the_size_cap_is_refused(make_runtime: MakeRuntime) -> None:
    async with make_runtime(message_max_bytes=1024, serialize_messages=True) as rt:
        ref = await rt.spawn(Echo, id="e")
        with pytest.raises(MessageTooLarge, match="1024"):
            await ref.tell(Message("big", {"blob": "x" * 2000}))


async def test_type_addressing_balances_across_live_agents_of_that_type(
    make_runtime: MakeRuntime,
) -> None:
    probe = Probe()
    async with make_runtime() as rt:
        for n in range(3):
            await rt.spawn(probe.agent("worker"), id=f"w{n}")
        for _ in range(9):
            await rt.tell("type:worker", Message("job"))
        await rt.settle()
        handled_by = [rt.local_cell(f"w{n}") for n in range(3)]
        assert all(cell is not None for cell in handled_by)
    assert len(probe.messages) == 9


async def test_topic_publish_reaches_every_matching_subscriber_once(
    make_runtime: MakeRuntime,
) -> None:
    probe = Probe()

    class Audit(Agent):
        type = "audit"
        topics = ("orders.#",)

        async def handle_message(self, message: Message) -> HandlerResult:
            probe.messages.append(message)
            return None

    async with make_runtime() as rt:
        await rt.spawn(Audit, id="audit")
        created = await rt.spawn(probe.agent("created"), id="created")
        cell = rt.local_cell(created.id)
        assert cell is not None
        await cell.ctx.subscribe("orders.created")
        await cell.ctx.subscribe("orders.*")  # overlapping patterns: still one delivery
        await rt.publish("orders.created", Message("evt", {"n": 1}))
        await rt.publish("orders.paid.late", Message("evt", {"n": 2}))
        await rt.publish("users.created", Message("evt", {"n": 3}))
        await rt.settle()
    received = sorted((m.payload["n"], m.target) for m in probe.messages)
    assert received == [
        (1, "topic:orders.created"),
        (1, "topic:orders.created"),
        (2, "topic:orders.paid.late"),
    ]


class Order(Message):
    """A subclass of the public Message, as an application may write one."""

    __slots__ = ()

    @property
    def quantity(self) -> int:
        return int(self.payload["quantity"])


async def test_a_message_subclass_is_handled_and_may_be_returned_like_a_message() -> None:
    # A plain Runtime: its messages are not serialized, so the subclass itself arrives.
    received: list[Message] = []

    class Shop(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            received.append(message)
            if message.reply_to is None:
                return None
            return Order("order.confirmed", {"quantity": 2 * int(message.payload["quantity"])})

    async with Runtime() as rt:
        ref = await rt.spawn(Shop, id="shop")
        await ref.tell(Order("order.placed", {"quantity": 1}))
        await rt.tell("agent:shop", Order("order.placed", {"quantity": 2}))
        reply = await ref.ask(Order("order.placed", {"quantity": 3}), timeout=5)

    assert [m.quantity for m in received if isinstance(m, Order)] == [1, 2, 3]
    assert isinstance(reply, Order)
    assert reply.quantity == 6
    assert rt.dead_letters.count == 0


async def test_death_watch_delivers_terminated(make_runtime: MakeRuntime) -> None:
    probe = Probe()
    async with make_runtime() as rt:
        watcher = await rt.spawn(probe.agent("watcher"), id="watcher")
        watched = await rt.spawn(Echo, id="watched")
        watched.watch(watcher)
        await watched.stop()
        await rt.settle()
        assert probe.types == [Terminated.TYPE]
        notice = Terminated.from_message(probe.messages[0])
        assert notice.agent_id == "watched"
        assert notice.reason == "stopped"


async def test_trace_id_is_created_and_carried_onto_messages_sent_while_handling(
    make_runtime: MakeRuntime,
) -> None:
    probe = Probe()

    class Relay(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            await self.ctx.send("agent:sink", Message("via_ctx"))
            return Message("via_return", target="agent:sink")

    async with make_runtime() as rt:
        await rt.spawn(probe.agent(), id="sink")
        await rt.spawn(Relay, id="relay")
        await rt.tell("agent:relay", Message("start"))
        await rt.settle()
        traced = Message("start", trace_id="abc123")
        await rt.tell("agent:relay", traced)
        await rt.settle()
    first, second = probe.messages[:2], probe.messages[2:]
    assert first[0].trace_id is not None
    assert first[0].trace_id == first[1].trace_id
    assert [m.trace_id for m in second] == ["abc123", "abc123"]
    assert {m.sender for m in probe.messages} == {"agent:relay"}


async def test_shutdown_drains_queued_and_in_flight_messages() -> None:
    handled: list[int] = []
    release = asyncio.Event()

    class Slow(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            await release.wait()
            handled.append(message.payload["n"])
            return None

    async with Runtime(Settings(log_level="CRITICAL", shutdown_timeout=5)) as rt:
        ref = await rt.spawn(Slow, id="slow")
        for n in range(5):
            await ref.tell(Message("w", {"n": n}))
        asyncio.get_running_loop().call_soon(release.set)
    assert handled == [0, 1, 2, 3, 4]
    assert rt.dead_letters.count == 0


async def test_shutdown_timeout_cancels_a_stuck_handler_and_dead_letters_what_is_left(
    make_runtime: MakeRuntime,
) -> None:
    Stuck.entered = asyncio.Event()
    async with make_runtime(shutdown_timeout=0.05) as rt:
        ref = await rt.spawn(Stuck, id="stuck")
        await ref.tell(Message("first"))
        await ref.tell(Message("second"))
        await asyncio.wait_for(Stuck.entered.wait(), 1)
    letters = [(d.message.type, d.reason) for d in rt.dead_letters.recent]
    # Nothing is lost: the interrupted message and the queued one are both dead letters.
    assert letters == [("first", "agent_stopped"), ("second", "agent_stopped")]


async def test_shutdown_timeout_is_one_deadline_for_all_agents_not_one_each(
    make_runtime: MakeRuntime,
) -> None:
    # Ten agents stuck in handlers: each stop used to wait its own full timeout after the
    # drain (1 + 10 x 1 s here; 110 s with the default 10 s), past an orchestrator's grace.
    entered: list[str] = []

    class Hung(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            entered.append(message.type)
            await asyncio.Event().wait()
            return None

    rt = make_runtime(shutdown_timeout=1)
    await rt.start()
    for n in range(10):
        ref = await rt.spawn(Hung, id=f"hung-{n}")
        await ref.tell(Message(f"job-{n}"))
        await ref.tell(Message(f"queued-{n}"))
    await eventually(lambda: len(entered) == 10)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await rt.shutdown(timeout=1)
    assert loop.time() - started < 5
    # Nothing is lost: every interrupted and every queued message is a dead letter.
    letters = {d.message.type for d in rt.dead_letters.recent if d.reason == "agent_stopped"}
    assert letters == {f"{kind}-{n}" for kind in ("job", "queued") for n in range(10)}


async def test_messages_from_another_node_left_at_shutdown_are_dead_letters_not_lost(
    make_runtime: MakeRuntime,
) -> None:
    # Nobody else consumes the agent's queue: handing them back would drop them.
    Stuck.entered = asyncio.Event()
    broker = MemoryBroker()
    async with make_runtime(transport=MemoryTransport(broker), node_id="sender") as sender:
        async with make_runtime(
            transport=MemoryTransport(broker), node_id="host", shutdown_timeout=0.05
        ) as host:
            await host.spawn(Stuck, id="stuck")
            for n in range(3):
                await sender.tell("agent:stuck", Message("job", {"n": n}))
            await asyncio.wait_for(Stuck.entered.wait(), 1)
        letters = [d.message.payload["n"] for d in host.dead_letters.recent]
    assert sorted(letters) == [0, 1, 2]


async def test_asks_with_different_timeouts_each_expire_on_their_own_deadline(
    make_runtime: MakeRuntime,
) -> None:
    async with make_runtime() as rt:
        ref = await rt.spawn(Silent, id="s")
        patient = asyncio.create_task(ref.ask(Message("long"), timeout=30))
        await asyncio.wait({patient}, timeout=0.01)
        started = asyncio.get_running_loop().time()
        with pytest.raises(AskTimeout):
            await ref.ask(Message("short"), timeout=0.05)
        assert asyncio.get_running_loop().time() - started < 5
        assert not patient.done()  # the 30s ask is still waiting
        patient.cancel()


async def test_a_task_the_runtime_started_does_not_outlive_it(make_runtime: MakeRuntime) -> None:
    # A task group's rule: nothing the runtime started runs after `async with` exits.
    async with make_runtime(shutdown_timeout=0.05) as rt:
        task = rt.start_task(asyncio.Event().wait())
    assert task.cancelled()


async def test_an_error_a_task_raises_while_cancelled_at_shutdown_fails_the_runtime(
    make_runtime: MakeRuntime,
) -> None:
    class CleanupFailed(Exception):
        pass

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise CleanupFailed("the cleanup broke")

    with pytest.raises(CleanupFailed):
        async with make_runtime(shutdown_timeout=0.05) as rt:
            rt.start_task(stubborn())


# -- messages are values once sent: a later send never changes a sent message --------------


class Seen(Agent):
    """Echoes, and records the target and reply_to each message arrived with."""

    type = "seen"
    log: list[tuple[str, str | None, str | None]] = []

    async def handle_message(self, message: Message) -> HandlerResult:
        Seen.log.append((message.type, message.target, message.reply_to))
        return message.reply({})


@pytest.fixture
def seen_log() -> list[tuple[str, str | None, str | None]]:
    Seen.log = []
    return Seen.log


class Gated(Seen):
    """Holds its first message until the test opens the gate, so what follows it waits in
    the mailbox (as a sent message waits anywhere) while the test sends again."""

    type = "gated"
    gate: asyncio.Event

    async def handle_message(self, message: Message) -> HandlerResult:
        if message.type == "hold":
            await Gated.gate.wait()
            return None
        return await super().handle_message(message)


async def test_a_sent_message_is_never_changed_by_a_later_send(
    make_runtime: Callable[..., Runtime], seen_log: list[tuple[str, str | None, str | None]]
) -> None:
    """A message queued for one agent, then asked of another and published: each receiver
    sees it as it was sent to it, and the ask is answered by the agent it asked."""

    class Answering(Seen):
        type = "answering"

        async def handle_message(self, message: Message) -> HandlerResult:
            await super().handle_message(message)
            return message.reply({"from": "b"})

    class Subscriber(Seen):
        type = "subscriber"
        topics = ("news.*",)

    Gated.gate = asyncio.Event()
    async with make_runtime() as rt:
        a = await rt.spawn(Gated, id="a")
        await rt.spawn(Answering, id="b")
        await rt.spawn(Subscriber, id="sub")
        await a.tell(Message("hold"))
        shared = Message("shared", {"n": 1})
        await a.tell(shared)  # waits in a's mailbox behind "hold"
        reply = await rt.ask("agent:b", shared, timeout=5)
        await rt.publish("news.today", shared)
        Gated.gate.set()
        await rt.settle()
    assert reply.payload == {"from": "b"}
    assert sorted(seen_log) == [
        ("shared", "agent:a", None),
        ("shared", "agent:b", f"reply:{rt.node_id}"),
        ("shared", "topic:news.today", None),
    ]
    # The first send addressed the caller's message; nothing after it changed it.
    assert (shared.target, shared.reply_to) == ("agent:a", None)


async def test_the_first_send_addresses_the_message_itself(
    make_runtime: Callable[..., Runtime], seen_log: list[tuple[str, str | None, str | None]]
) -> None:
    """Documented and relied on by the fast path: an unaddressed message is addressed in
    place (no copy per send); a handler sees the address it was sent to."""
    async with make_runtime() as rt:
        ref = await rt.spawn(Seen, id="a")
        by_ref, by_address, asked = Message("by_ref"), Message("by_address"), Message("asked")
        await ref.tell(by_ref)
        await rt.tell("agent:a", by_address)
        await ref.ask(asked, timeout=5)
        await rt.settle()
    assert (by_ref.target, by_address.target) == ("agent:a", "agent:a")
    assert (asked.target, asked.reply_to) == ("agent:a", f"reply:{rt.node_id}")
    assert sorted(seen_log) == [
        ("asked", "agent:a", f"reply:{rt.node_id}"),
        ("by_address", "agent:a", None),
        ("by_ref", "agent:a", None),
    ]


async def test_a_message_sent_to_two_agents_arrives_addressed_to_each(
    make_runtime: Callable[..., Runtime], seen_log: list[tuple[str, str | None, str | None]]
) -> None:
    async with make_runtime() as rt:
        a = await rt.spawn(Seen, id="a")
        b = await rt.spawn(Seen, id="b")
        by_ref = Message("by_ref")
        await a.tell(by_ref)
        await b.tell(by_ref)
        by_address = Message("by_address")
        await rt.tell("agent:a", by_address)
        await rt.tell("agent:b", by_address)
        await rt.settle()
    assert sorted(seen_log) == [
        ("by_address", "agent:a", None),
        ("by_address", "agent:b", None),
        ("by_ref", "agent:a", None),
        ("by_ref", "agent:b", None),
    ]
    # Addressed by the first send; the second went as a copy.
    assert by_ref.target == by_address.target == "agent:a"


async def test_forwarding_a_received_message_leaves_the_other_receivers_copy_alone(
    make_runtime: Callable[..., Runtime],
) -> None:
    """Two subscribers get one published message; one forwards it. The other still sees it
    as published: no sender, so its reply goes nowhere rather than to the forwarder."""
    forwarded = asyncio.Event()
    seen: dict[str, str | None] = {}

    class Forwarder(Agent):
        type = "forwarder"
        topics = ("news.*",)

        async def handle_message(self, message: Message) -> HandlerResult:
            await self.ctx.send("agent:inbox", message)
            forwarded.set()
            return None

    class Late(Agent):
        type = "late"
        topics = ("news.*",)

        async def handle_message(self, message: Message) -> HandlerResult:
            await forwarded.wait()
            seen["sender"] = message.sender
            return None

    probe = Probe()
    async with make_runtime() as rt:
        await rt.spawn(probe.agent(), id="inbox")
        await rt.spawn(Forwarder, id="fwd")
        await rt.spawn(Late, id="late")
        published = Message("headline", {"n": 1})
        await rt.publish("news.today", published)
        (received,) = await probe.wait_for(1)
        await rt.settle()
    assert seen == {"sender": None}
    assert published.sender is None
    assert received.sender == "agent:fwd"
