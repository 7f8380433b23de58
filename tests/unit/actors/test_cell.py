"""One agent's processing: activation, ordering, retries, dead letters, overflow, idempotency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mas import (
    Agent,
    HandlerError,
    HandlerResult,
    MailboxFull,
    Message,
    Rejected,
    Runtime,
    ServiceUnavailable,
    TaskResult,
)
from mas.testing import ManualClock, Probe, TestRuntime, crashing, eventually

pytestmark = pytest.mark.anyio

MakeRuntime = Callable[..., Runtime]  # the `make_runtime` fixture (conftest.py)


class Gate(Agent):
    """Blocks in its handler until the test opens the gate; counts concurrency."""

    type = "gate"
    opened: asyncio.Event
    entered: asyncio.Event
    running = 0
    max_running = 0
    seen: list[str]

    async def handle_message(self, message: Message) -> HandlerResult:
        cls = type(self)
        cls.running += 1
        cls.max_running = max(cls.max_running, cls.running)
        cls.entered.set()
        await cls.opened.wait()
        cls.seen.append(str(message.payload.get("n")))
        cls.running -= 1
        return None


def fresh_gate() -> type[Gate]:
    class FreshGate(Gate):
        opened = asyncio.Event()
        entered = asyncio.Event()
        running = 0
        max_running = 0
        seen: list[str] = []

    return FreshGate


async def test_an_idle_agent_holds_no_task_until_a_message_arrives(
    make_runtime: MakeRuntime,
) -> None:
    probe = Probe()
    async with make_runtime() as rt:
        ref = await rt.spawn(probe.agent(), id="idle")
        cell = rt.local_cell("idle")
        assert cell is not None
        assert not cell.busy
        assert not rt.tasks.busy
        await ref.tell(Message("wake"))
        assert cell.busy  # activated by the message
        await rt.settle()
        assert not cell.busy
        assert probe.types == ["wake"]


async def test_one_agent_handles_one_message_at_a_time_in_order(make_runtime: MakeRuntime) -> None:
    gate = fresh_gate()
    async with make_runtime() as rt:
        ref = await rt.spawn(gate, id="g")
        for n in range(5):
            await ref.tell(Message("work", {"n": n}))
        await asyncio.wait_for(gate.entered.wait(), 1)
        gate.opened.set()
        await rt.settle()
    assert gate.max_running == 1
    assert gate.seen == ["0", "1", "2", "3", "4"]


async def test_messages_from_one_sender_arrive_in_send_order(make_runtime: MakeRuntime) -> None:
    probe = Probe()

    class Sender(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            return [Message("seq", {"n": n}, target="agent:sink") for n in range(50)]

    async with make_runtime() as rt:
        await rt.spawn(probe.agent(), id="sink")
        await rt.spawn(Sender, id="sender")
        await rt.tell("agent:sender", Message("go"))
        await rt.settle()
    assert [m.payload["n"] for m in probe.messages] == list(range(50))
    assert {m.sender for m in probe.messages} == {"agent:sender"}


async def test_a_poison_message_is_retried_then_dead_lettered_with_error_and_attempts(
    make_runtime: MakeRuntime,
) -> None:
    factory, counters = crashing(0, agent_type="poisoned", on_types=("poison",))
    async with make_runtime() as rt:
        ref = await rt.spawn(factory, id="p")
        async with rt.dead_letters.subscribe() as letters:
            await ref.tell(Message("poison", {"id": 1}))
            await ref.tell(Message("fine"))
            letter = await asyncio.wait_for(letters.get(), 2)
        await rt.settle()
        assert letter.reason == "max_attempts"
        assert letter.attempts == 3
        assert letter.error_type == "Crash"
        assert letter.message.payload == {"id": 1}
        assert counters["crashes"] == 3
        assert counters["handled"] == 1  # other messages keep flowing
        assert rt.dead_letters.count == 1


class Picky(Agent):
    """Rejects odd numbers as its sender's mistake; counts starts and what it handled."""

    type = "picky"
    starts = 0
    handled: list[int]

    async def start(self) -> None:
        type(self).starts += 1

    async def handle_message(self, message: Message) -> HandlerResult:
        n = message.payload["n"]
        if n % 2:
            raise Rejected(f"{n} is odd")
        type(self).handled.append(n)
        return message.reply({"n": n})


async def test_a_rejected_message_is_dead_lettered_at_once_and_the_agent_goes_on(
    make_runtime: MakeRuntime,
) -> None:
    Picky.starts, Picky.handled = 0, []
    async with make_runtime() as rt:
        ref = await rt.spawn(Picky, id="picky")
        async with rt.dead_letters.subscribe() as letters:
            with pytest.raises(Rejected, match="agent 'picky' rejected the message: ") as caught:
                await ref.ask(Message("n", {"n": 1}), timeout=2)
            letter = await asyncio.wait_for(letters.get(), 2)
        assert (await ref.ask(Message("n", {"n": 2}), timeout=2)).payload == {"n": 2}
        await rt.settle()
        assert caught.value.agent_id == "picky"
        assert "Rejected: 1 is odd" in str(caught.value)
        assert (letter.reason, letter.attempts, letter.error_type) == ("rejected", 1, "Rejected")
        assert Picky.handled == [2]
        assert Picky.starts == 1  # not restarted: the message was at fault, not the agent
        assert rt.restarts == 0


class Busy(Agent):
    """Its service is down for the first `outages` messages, asking for `retry_after` s."""

    type = "busy"
    outages = 0
    retry_after: float | None = None
    starts = 0
    handled: list[str]

    async def start(self) -> None:
        type(self).starts += 1

    async def handle_message(self, message: Message) -> HandlerResult:
        cls = type(self)
        if cls.outages:
            cls.outages -= 1
            raise ServiceUnavailable("the model server answered 429", retry_after=cls.retry_after)
        cls.handled.append(message.id)
        return None


@pytest.mark.test_runtime_only
async def test_an_outage_is_retried_when_the_service_asks_not_before() -> None:
    Busy.outages, Busy.retry_after, Busy.starts, Busy.handled = 1, 30.0, 0, []
    clock = ManualClock(autojump=False)
    settings = {"retry": {"max_attempts": 3, "base_delay": 1.0, "jitter": 0.0}}
    async with TestRuntime(clock=clock, **settings) as rt:
        await rt.spawn(Busy, id="busy")
        await rt.tell("agent:busy", Message("job"))
        await rt.settle(advance_clock=False)
        clock.advance(29.9)  # the retry's own backoff (1 s) is long over
        await rt.settle(advance_clock=False)
        assert Busy.handled == []
        clock.advance(0.1)
        await rt.settle(advance_clock=False)
        assert len(Busy.handled) == 1


async def test_an_outage_does_not_restart_the_agent_or_count_towards_its_supervisor(
    make_runtime: MakeRuntime,
) -> None:
    # More failures in a row than the supervisor tolerates restarts: were they restarts,
    # it would give up (escalate) on the second.
    Busy.outages, Busy.retry_after, Busy.starts, Busy.handled = 3, None, 0, []
    settings = {
        "retry": {"max_attempts": 4, "base_delay": 0.0, "max_delay": 0.0, "jitter": 0.0},
        "supervisor": {"max_restarts": 1, "period": 60.0},
    }
    async with make_runtime(**settings) as rt:
        ref = await rt.spawn(Busy, id="busy")
        await ref.tell(Message("job"))
        await eventually(lambda: len(Busy.handled) == 1)
        await ref.tell(Message("next"))  # alive: its supervisor did not give up
        await eventually(lambda: len(Busy.handled) == 2)
        assert Busy.starts == 1  # its state kept: an outage is not the agent's fault
        assert rt.restarts == 0


@pytest.mark.test_runtime_only
async def test_retries_wait_an_exponential_backoff_on_the_runtime_clock() -> None:
    clock = ManualClock(autojump=False)
    factory, counters = crashing(2, agent_type="flaky")
    settings = {"retry": {"max_attempts": 3, "base_delay": 1.0, "jitter": 0.0}}
    async with TestRuntime(clock=clock, **settings) as rt:
        await rt.spawn(factory, id="f")
        await rt.tell("agent:f", Message("job"))
        await rt.settle(advance_clock=False)
        assert counters["crashes"] == 1
        clock.advance(0.99)
        await rt.settle(advance_clock=False)
        assert counters["crashes"] == 1  # not before 1s
        clock.advance(0.01)
        await rt.settle(advance_clock=False)
        assert counters["crashes"] == 2
        clock.advance(1.99)  # second retry waits 2s
        await rt.settle(advance_clock=False)
        assert counters["handled"] == 0
        clock.advance(0.01)
        await rt.settle(advance_clock=False)
        assert counters["handled"] == 1


async def test_ask_raises_handler_error_when_every_attempt_failed(
    make_runtime: MakeRuntime,
) -> None:
    factory, _ = crashing(99, agent_type="broken")
    async with make_runtime() as rt:
        ref = await rt.spawn(factory, id="b")
        with pytest.raises(HandlerError) as caught:
            await ref.ask(Message("q"), timeout=2)
        assert caught.value.attempts == 3
        assert caught.value.error_type == "Crash"


async def test_wrong_handler_return_type_is_a_type_error_naming_the_agent(
    make_runtime: MakeRuntime,
) -> None:
    class Wrong(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            return "not a message"  # type: ignore[return-value]

    async with make_runtime(retry={"max_attempts": 1}) as rt:
        ref = await rt.spawn(Wrong, id="wrong")
        with pytest.raises(HandlerError) as caught:
            await ref.ask(Message("q"), timeout=2)
        assert caught.value.error_type == "HandlerReturnError"
        assert "'wrong'" in caught.value.error_message
        assert "str" in caught.value.error_message
        letter = rt.dead_letters.recent[-1]
        assert letter.error_type == "HandlerReturnError"


async def test_a_duplicate_message_id_is_handled_once_and_its_reply_resent(
    make_runtime: MakeRuntime,
) -> None:
    calls = {"n": 0}

    class Counter(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            calls["n"] += 1
            return message.reply({"n": calls["n"]})

    async with make_runtime() as rt:
        ref = await rt.spawn(Counter, id="c")
        first = await ref.ask(Message("inc", id="fixed-id"), timeout=1)
        again = await ref.ask(Message("inc", id="fixed-id"), timeout=1)
        assert calls["n"] == 1
        assert again.payload == first.payload == {"n": 1}
        assert rt.duplicates == 1


@pytest.mark.test_runtime_only
async def test_an_injected_duplicate_delivery_is_handled_once() -> None:
    probe = Probe()
    async with TestRuntime() as rt:
        await rt.spawn(probe.agent(), id="p")
        rt.faults.duplicate_next("pay")
        await rt.tell("agent:p", Message("pay", {"amount": 5}))
        await rt.settle()
        assert probe.types == ["pay"]
        assert rt.duplicates == 1


async def test_reject_policy_raises_mailbox_full_to_the_sender(make_runtime: MakeRuntime) -> None:
    gate = fresh_gate()
    async with make_runtime() as rt:
        ref = await rt.spawn(gate, id="r", mailbox_capacity=2, overflow="reject")
        await ref.tell(Message("w", {"n": 0}))
        await asyncio.wait_for(gate.entered.wait(), 1)  # handler busy, mailbox empty
        await ref.tell(Message("w", {"n": 1}))
        await ref.tell(Message("w", {"n": 2}))
        with pytest.raises(MailboxFull) as caught:
            await ref.tell(Message("w", {"n": 3}))
        assert caught.value.capacity == 2
        gate.opened.set()
        await rt.settle()
    assert gate.seen == ["0", "1", "2"]


async def test_drop_oldest_policy_dead_letters_the_dropped_message(
    make_runtime: MakeRuntime,
) -> None:
    gate = fresh_gate()
    async with make_runtime() as rt:
        ref = await rt.spawn(gate, id="d", mailbox_capacity=2, overflow="drop_oldest")
        await ref.tell(Message("w", {"n": 0}))
        await asyncio.wait_for(gate.entered.wait(), 1)
        for n in (1, 2, 3):
            await ref.tell(Message("w", {"n": n}))
        gate.opened.set()
        await rt.settle()
        assert rt.dead_letters.by_reason["mailbox_overflow"] == 1
        assert rt.dead_letters.recent[-1].message.payload == {"n": 1}
    assert gate.seen == ["0", "2", "3"]


async def test_an_ask_dropped_by_an_overflowing_mailbox_says_so_without_a_made_up_size(
    make_runtime: MakeRuntime,
) -> None:
    gate = fresh_gate()
    async with make_runtime() as rt:
        ref = await rt.spawn(gate, id="d", mailbox_capacity=2, overflow="drop_oldest")
        cell = rt.local_cell("d")
        assert cell is not None
        await ref.tell(Message("w", {"n": 0}))
        await asyncio.wait_for(gate.entered.wait(), 1)
        asked = asyncio.create_task(ref.ask(Message("w", {"n": 1}), timeout=5))
        await eventually(lambda: len(cell.mailbox) == 1)
        for n in (2, 3):  # the asked message is the oldest: dropped
            await ref.tell(Message("w", {"n": n}))
        with pytest.raises(MailboxFull) as caught:
            await asked
        gate.opened.set()
        await rt.settle()
    assert caught.value.agent_id == "d"
    assert caught.value.capacity is None
    assert "(0 messages)" not in str(caught.value)
    assert "overflowed and dropped the message" in str(caught.value)


async def test_block_policy_makes_the_sender_wait_for_room(make_runtime: MakeRuntime) -> None:
    gate = fresh_gate()
    async with make_runtime() as rt:
        ref = await rt.spawn(gate, id="b", mailbox_capacity=1, overflow="block")
        await ref.tell(Message("w", {"n": 0}))
        await asyncio.wait_for(gate.entered.wait(), 1)
        await ref.tell(Message("w", {"n": 1}))  # fills the mailbox
        blocked = asyncio.create_task(ref.tell(Message("w", {"n": 2})))
        done, _ = await asyncio.wait({blocked}, timeout=0.05)
        assert not done  # back-pressure: the sender waits while the mailbox is full
        gate.opened.set()
        await asyncio.wait_for(blocked, 1)
        await rt.settle()
    assert gate.seen == ["0", "1", "2"]


async def test_task_result_completes_the_task_and_answers_the_asker(
    make_runtime: MakeRuntime,
) -> None:
    completed: list[TaskResult] = []

    class Worker(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            assert message.task_id is not None
            return TaskResult.succeeded(message.task_id, {"sum": sum(message.payload["xs"])})

    async def on_result(result: TaskResult, message: Message) -> None:
        completed.append(result)

    async with make_runtime() as rt:
        rt.add_task_listener(on_result)
        ref = await rt.spawn(Worker, id="w")
        reply = await ref.ask(Message("add", {"xs": [1, 2]}, metadata={"task_id": "t1"}), timeout=1)
        assert reply.type == "mas.task_result"
        assert reply.payload["status"] == "succeeded"
        assert reply.payload["result"] == {"sum": 3}
    assert [r.task_id for r in completed] == ["t1"]


def test_a_service_cannot_put_a_retry_off_for_ever() -> None:
    asked = ServiceUnavailable("busy", retry_after=float("inf")).retry_after
    assert asked == ServiceUnavailable.MAX_RETRY_AFTER  # an hour: the message still comes back
    assert ServiceUnavailable("busy", retry_after=float("nan")).retry_after is None
    assert ServiceUnavailable("busy", retry_after=-1.0).retry_after is None
