"""The test kit itself: settle, the manual clock, fault injection, probes, the plugin."""

from __future__ import annotations

import asyncio

import pytest

from mas import Agent, HandlerResult, Message, Runtime, Settings
from mas.testing import FaultPlan, ManualClock, Probe, TestRuntime, crashing

pytestmark = pytest.mark.anyio


def test_manual_clock_fires_timers_in_deadline_order_only_when_advanced() -> None:
    clock = ManualClock(autojump=False)
    fired: list[str] = []
    clock.call_later(2.0, lambda: fired.append("two"))
    clock.call_later(1.0, lambda: fired.append("one"))
    cancelled = clock.call_later(1.5, lambda: fired.append("never"))
    cancelled.cancel()
    assert clock.advance(0.5) == 0
    assert fired == []
    assert clock.advance(2.0) == 2
    assert fired == ["one", "two"]
    assert clock.time() == 2.5
    assert clock.pending == 0


def test_skip_to_next_timer_jumps_over_dead_time() -> None:
    clock = ManualClock()
    fired: list[float] = []
    clock.call_later(30.0, lambda: fired.append(clock.time()))
    assert clock.skip_to_next_timer()
    assert fired == [30.0]
    assert not clock.skip_to_next_timer()


async def test_settle_makes_an_hour_of_backoff_take_no_real_time() -> None:
    factory, counters = crashing(4, agent_type="slow_to_recover")
    settings = {"retry": {"max_attempts": 5, "base_delay": 600.0, "max_delay": 3600.0}}
    async with TestRuntime(**settings) as rt:
        await rt.spawn(factory, id="f")
        started = asyncio.get_running_loop().time()
        await rt.tell("agent:f", Message("job"))
        await rt.settle()
        assert asyncio.get_running_loop().time() - started < 5
        assert rt.manual_clock.time() >= 600 + 1200 + 2400
    assert counters["handled"] == 1


async def test_a_fault_plan_given_to_a_plain_runtime_applies_to_ref_tells() -> None:
    # The hook is the production delivery path's: a plain Runtime honours it too, and a
    # ref's fast path (which would skip straight into the mailbox) makes way for it.
    probe = Probe()
    plan = FaultPlan()
    async with Runtime(Settings(log_level="WARNING"), faults=plan) as rt:
        ref = await rt.spawn(probe.agent(), id="p")
        plan.drop_next("lost")
        plan.duplicate_next("twice")
        await ref.tell(Message("lost"))
        await ref.tell(Message("twice"))
        await rt.settle()
        assert rt.duplicates == 1
    assert probe.types == ["twice"]
    assert [m.type for m in plan.dropped] == ["lost"]


async def test_test_runtime_takes_a_fault_plan() -> None:
    plan = FaultPlan()
    async with TestRuntime(faults=plan) as rt:
        assert rt.faults is plan


async def test_fault_plan_drops_the_next_delivery_of_a_type() -> None:
    probe = Probe()
    async with TestRuntime() as rt:
        await rt.spawn(probe.agent(), id="p")
        rt.faults.drop_next("lost")
        await rt.tell("agent:p", Message("lost"))
        await rt.tell("agent:p", Message("lost"))
        await rt.settle()
    assert probe.types == ["lost"]
    assert [m.type for m in rt.faults.dropped] == ["lost"]


async def test_probe_wait_for_times_out_when_too_few_messages_arrive() -> None:
    probe = Probe()
    async with TestRuntime() as rt:
        await rt.spawn(probe.agent(), id="p")
        await rt.tell("agent:p", Message("one"))
        assert len(await probe.wait_for(1)) == 1
        with pytest.raises(TimeoutError):
            await probe.wait_for(2, timeout=0.05)


async def test_probe_can_answer_asks() -> None:
    probe = Probe(reply=True)
    async with TestRuntime() as rt:
        ref = await rt.spawn(probe.agent(), id="p")
        reply = await ref.ask(Message("q", {"x": 1}), timeout=1)
    assert reply.payload == {"x": 1}


async def test_the_mas_runtime_fixture_is_a_started_test_runtime(mas_runtime: TestRuntime) -> None:
    class Hello(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            return message.reply({"hi": True})

    ref = await mas_runtime.spawn(Hello, id="h")
    assert (await ref.ask(Message("q"), timeout=1)).payload == {"hi": True}
    assert mas_runtime.settings.serialize_messages


def test_a_misspelt_setting_is_an_error_not_silently_ignored() -> None:
    from mas import ConfigError

    with pytest.raises(ConfigError, match="mailbox_capacty"):
        TestRuntime(mailbox_capacty=5)


async def test_eventually_returns_once_a_check_holds_and_times_out_when_it_never_does() -> None:
    from mas.testing import eventually

    calls = {"sync": 0, "async": 0}

    def third_time() -> bool:
        calls["sync"] += 1
        return calls["sync"] >= 3

    async def second_time() -> bool:
        calls["async"] += 1
        return calls["async"] >= 2

    await eventually(third_time, timeout=5, interval=0)
    await eventually(second_time, timeout=5, interval=0)
    assert calls == {"sync": 3, "async": 2}
    with pytest.raises(TimeoutError):
        await eventually(lambda: False, timeout=0.05)
