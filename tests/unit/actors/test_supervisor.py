"""Supervision: strategies, restart types, intensity, escalation, ordering, backoff."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mas import (
    Agent,
    HandlerResult,
    Message,
    Runtime,
    SupervisorEscalation,
)
from mas.config import Settings, SupervisorSettings
from mas.testing import ManualClock, TestRuntime

pytestmark = pytest.mark.anyio

MakeRuntime = Callable[..., Runtime]  # the `make_runtime` fixture (conftest.py)


def recorder(name: str, events: list[str]) -> Callable[[], Agent]:
    """An agent that logs start/stop/handle into `events` and crashes on type 'crash'."""

    class Recorded(Agent):
        type = "recorded"

        async def start(self) -> None:
            events.append(f"start {name}")

        async def stop(self) -> None:
            events.append(f"stop {name}")

        async def handle_message(self, message: Message) -> HandlerResult:
            if message.type == "crash":
                raise RuntimeError(f"{name} crashed")
            if message.type == "exit":
                self.ctx.stop()
            events.append(f"handle {name} {message.type}")
            return None

    return Recorded


def no_retry(**supervisor: float) -> Settings:
    """Crash messages are tried once, so one crash means exactly one restart."""
    return Settings(
        serialize_messages=True,
        log_level="CRITICAL",
        retry={"max_attempts": 1},  # type: ignore[arg-type]
        supervisor=SupervisorSettings(**supervisor),  # type: ignore[arg-type]
    )


async def spawn_three(rt: Runtime, strategy: str, events: list[str]) -> list[str]:
    sup = await rt.spawn_supervisor("sup", strategy=strategy)  # type: ignore[arg-type]
    for name in ("a", "b", "c"):
        await sup.spawn(recorder(name, events), id=name)
    events.clear()
    return events


async def test_one_for_one_restarts_only_the_failed_child(make_runtime: MakeRuntime) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        await spawn_three(rt, "one_for_one", events)
        await rt.tell("agent:b", Message("crash"))
        await rt.settle()
        assert events == ["stop b", "start b"]
        assert rt.restarts == 1


async def test_one_for_all_restarts_every_child_stopping_in_reverse_order(
    make_runtime: MakeRuntime,
) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        await spawn_three(rt, "one_for_all", events)
        await rt.tell("agent:b", Message("crash"))
        await rt.settle()
        assert events == ["stop c", "stop b", "stop a", "start a", "start b", "start c"]


async def test_rest_for_one_restarts_the_failed_child_and_those_started_after_it(
    make_runtime: MakeRuntime,
) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        await spawn_three(rt, "rest_for_one", events)
        await rt.tell("agent:b", Message("crash"))
        await rt.settle()
        assert events == ["stop c", "stop b", "start b", "start c"]


async def test_restarted_agent_keeps_its_mailbox_and_ref(make_runtime: MakeRuntime) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        ref = await rt.spawn(recorder("a", events), id="a")
        await ref.tell(Message("crash"))
        await ref.tell(Message("after"))
        await rt.settle()
        assert ref.is_alive
        assert events[-1] == "handle a after"


async def test_temporary_child_is_not_restarted_and_its_queue_is_dead_lettered(
    make_runtime: MakeRuntime,
) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        ref = await rt.spawn(recorder("t", events), id="t", restart="temporary")
        await ref.tell(Message("crash"))
        await rt.settle()
        assert not ref.is_alive
        assert "start t" in events
        assert events.count("start t") == 1
        assert rt.local_cell("t") is None


async def test_transient_child_is_restarted_after_a_crash_but_not_after_a_normal_exit(
    make_runtime: MakeRuntime,
) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        ref = await rt.spawn(recorder("x", events), id="x", restart="transient")
        await ref.tell(Message("crash"))
        await rt.settle()
        assert ref.is_alive
        assert events.count("start x") == 2
        await ref.tell(Message("exit"))
        await rt.settle()
        assert not ref.is_alive


async def test_permanent_child_is_restarted_even_after_a_normal_exit(
    make_runtime: MakeRuntime,
) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        ref = await rt.spawn(recorder("p", events), id="p")
        await ref.tell(Message("exit"))
        await rt.settle()
        assert ref.is_alive
        assert events.count("start p") == 2


async def test_explicit_stop_is_never_undone(make_runtime: MakeRuntime) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        ref = await rt.spawn(recorder("p", events), id="p")
        await ref.stop()
        await rt.settle()
        assert not ref.is_alive
        assert events == ["start p", "stop p"]


async def test_intensity_exceeded_escalates_to_the_parent_which_restarts_the_subtree(
    make_runtime: MakeRuntime,
) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        sup = await rt.spawn_supervisor("inner", strategy="one_for_one", max_restarts=1, period=60)
        await sup.spawn(recorder("a", events), id="a")
        await sup.spawn(recorder("b", events), id="b")
        events.clear()
        await rt.tell("agent:a", Message("crash"))
        await rt.settle()
        assert events == ["stop a", "start a"]
        events.clear()
        await rt.tell("agent:a", Message("crash"))  # second restart within 60s: too many
        await rt.settle()
        # The inner supervisor stops its children in reverse order and fails to the root,
        # whose one_for_one strategy restarts the inner supervisor and so both children.
        assert events == ["stop b", "stop a", "start a", "start b"]
        assert rt.failure is None
        assert sup.intensity.recent == 0


async def test_root_escalation_is_raised_to_the_embedding_code(make_runtime: MakeRuntime) -> None:
    events: list[str] = []
    with pytest.raises(SupervisorEscalation) as caught:
        async with make_runtime(no_retry(max_restarts=0)) as rt:
            await rt.spawn(recorder("a", events), id="a")
            await rt.tell("agent:a", Message("crash"))
            await rt.settle()
            pytest.fail("the body should have been cancelled by the root's failure")
    assert caught.value.supervisor_id == "root"
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert "stop a" in events


async def test_agents_stop_in_reverse_start_order_on_shutdown(make_runtime: MakeRuntime) -> None:
    events: list[str] = []
    async with make_runtime(no_retry()) as rt:
        for name in ("a", "b"):
            await rt.spawn(recorder(name, events), id=name)
        sup = await rt.spawn_supervisor("late")
        await sup.spawn(recorder("c", events), id="c")
        await sup.spawn(recorder("d", events), id="d")
        events.clear()
    assert events == ["stop d", "stop c", "stop b", "stop a"]


@pytest.mark.test_runtime_only
async def test_consecutive_restarts_back_off_on_the_runtime_clock() -> None:
    events: list[str] = []
    clock = ManualClock(autojump=False)
    settings = no_retry(backoff_base=1.0, backoff_max=8.0, jitter=0.0)
    async with TestRuntime(settings, clock=clock) as rt:
        ref = await rt.spawn(recorder("a", events), id="a")
        await ref.tell(Message("crash"))
        await rt.settle(advance_clock=False)
        assert events[-1] == "start a"  # the first restart is immediate
        await ref.tell(Message("crash"))
        await ref.tell(Message("hello"))
        await rt.settle(advance_clock=False)
        assert events[-1] == "stop a"  # the second waits 1s of backoff
        clock.advance(0.5)
        await rt.settle(advance_clock=False)
        assert events[-1] == "stop a"
        clock.advance(0.5)
        await rt.settle(advance_clock=False)
        assert events[-2:] == ["start a", "handle a hello"]


async def test_a_failing_start_during_restart_counts_towards_the_intensity(
    make_runtime: MakeRuntime,
) -> None:
    starts = {"n": 0}

    class BadRestart(Agent):
        async def start(self) -> None:
            starts["n"] += 1
            if starts["n"] > 1:
                raise RuntimeError("cannot reconnect")

        async def handle_message(self, message: Message) -> HandlerResult:
            raise RuntimeError("boom")

    with pytest.raises(SupervisorEscalation):
        async with make_runtime(no_retry(max_restarts=3)) as rt:
            await rt.spawn(BadRestart, id="bad")
            await rt.tell("agent:bad", Message("go"))
            await rt.settle()
    assert starts["n"] == 4  # spawn + 3 failed restarts, then the 4th failure escalates
