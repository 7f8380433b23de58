"""Durable steps: a handler re-run for the same message (here, a retry after it raised) gets
every finished `ctx.step`/`ask`/`send` back from the record and does only what is left.

What a user relies on: a side effect inside a finished step happens once, an agent asked
once is not asked again, a message sent once is not delivered twice, a handler whose path
changed between runs fails loudly, and a step result that cannot be recorded is refused.
The same across processes with a database: tests/unit/persistence/test_workflow_record.py.
"""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from typing import Any, ClassVar

import pytest

from mas import (
    Agent,
    HandlerError,
    Message,
    Rejected,
    StepResultNotJSON,
    WorkflowDiverged,
)
from mas.actors.agent import _reply_or_park
from mas.actors.workflow import Wait
from mas.messages import derived_id
from mas.testing import eventually
from tests.unit.actors.conftest import MakeRuntime

pytestmark = pytest.mark.anyio

effects: Counter[str] = Counter()
"""Side effects outside mas, counted: what a finished step must not repeat."""


@pytest.fixture(autouse=True)
def _fresh() -> None:
    effects.clear()
    Sink.received = []
    Report.crash_at = set()


class Researcher(Agent):
    type = "researcher"

    async def handle_message(self, message: Message) -> Message:
        effects[f"research {message.payload['topic']}"] += 1
        return message.reply({"draft": f"about {message.payload['topic']}"})


class Sink(Agent):
    type = "sink"
    received: ClassVar[list[Message]] = []

    async def handle_message(self, message: Message) -> None:
        type(self).received.append(message)


def split(goal: str) -> list[str]:
    effects["split"] += 1
    return goal.split()


class Report(Agent):
    """split -> ask a researcher per topic (fan-out/fan-in) -> notify -> merge."""

    type = "report"
    crash_at: ClassVar[set[str]] = set()
    """Raise once at this point of the handler (the first run dies midway)."""

    def _maybe_crash(self, point: str) -> None:
        if point in self.crash_at:
            self.crash_at.discard(point)
            raise RuntimeError(f"crashed after {point}")

    async def handle_message(self, message: Message) -> Message:
        ctx = self.ctx
        topics = await ctx.step("split", split, message.payload["goal"])
        self._maybe_crash("split")
        replies = await ctx.gather(
            *[
                ctx.ask("agent:researcher", Message("research", {"topic": t}), timeout=5)
                for t in topics
            ]
        )
        self._maybe_crash("research")
        await ctx.send("agent:sink", Message("drafted", {"count": len(replies)}))
        self._maybe_crash("notified")
        merged = await ctx.step("merge", merge, [r.payload["draft"] for r in replies])
        return message.reply({"report": merged})


async def merge(drafts: list[str]) -> str:
    effects["merge"] += 1
    return "; ".join(drafts)


async def _start(make_runtime: MakeRuntime, **settings: Any) -> Any:
    runtime = make_runtime(retry={"max_attempts": 3, "base_delay": 0.0, "jitter": 0.0}, **settings)
    await runtime.__aenter__()
    await runtime.spawn(Researcher, id="researcher")
    await runtime.spawn(Sink, id="sink")
    await runtime.spawn(Report, id="report")
    return runtime


EXPECTED = {"report": "about a; about b; about c"}


@pytest.mark.parametrize("crash_at", ["split", "research", "notified"])
async def test_a_rerun_does_no_finished_step_again(make_runtime: MakeRuntime, crash_at: str):
    Report.crash_at = {crash_at}
    runtime = await _start(make_runtime)
    try:
        reply = await runtime.ask("agent:report", Message("goal", {"goal": "a b c"}), timeout=10)
        assert reply.payload == EXPECTED  # the same as a run that never crashed
        await eventually(lambda: len(Sink.received) >= 1)
    finally:
        await runtime.__aexit__(None, None, None)
    assert runtime.failures == 1  # the first run did crash
    assert effects == {
        "split": 1,
        "research a": 1,
        "research b": 1,
        "research c": 1,
        "merge": 1,
    }
    assert len(Sink.received) == 1


async def test_messages_a_handler_sends_have_the_same_ids_on_every_run(
    make_runtime: MakeRuntime,
) -> None:
    runtime = await _start(make_runtime)
    try:
        request = Message("goal", {"goal": "a"})
        await runtime.ask("agent:report", request, timeout=10)
        await eventually(lambda: len(Sink.received) == 1)
    finally:
        await runtime.__aexit__(None, None, None)
    # Step 0 split, 1 the ask, 2 the send: ids derived from the request and the handler.
    assert Sink.received[0].id == derived_id(f"{request.id}/agent:report", 2)


async def test_a_rerun_that_takes_another_path_is_dead_lettered_at_once(
    make_runtime: MakeRuntime,
) -> None:
    class Fickle(Agent):
        type = "fickle"
        runs = 0

        async def handle_message(self, message: Message) -> None:
            type(self).runs += 1
            name = "first" if type(self).runs == 1 else "second"
            await self.ctx.step(name, lambda: effects.update([name]))
            if type(self).runs == 1:
                raise RuntimeError("crash")

    async with make_runtime(retry={"max_attempts": 5, "base_delay": 0.0, "jitter": 0.0}) as rt:
        await rt.spawn(Fickle, id="fickle")
        with pytest.raises(HandlerError) as caught:
            await rt.ask("agent:fickle", Message("go"), timeout=10)
        assert caught.value.error_type == WorkflowDiverged.__name__
        assert caught.value.attempts == 2  # not retried: it would diverge again
        letter = rt.dead_letters.recent[-1]
        assert letter.reason == "workflow_diverged"
        assert "'step first'" in (letter.error_message or "")
        assert "'step second'" in (letter.error_message or "")
    assert effects == {"first": 1}  # the second path's step never ran


async def test_a_step_result_that_is_not_json_is_refused_with_its_name(
    make_runtime: MakeRuntime,
) -> None:
    class Careless(Agent):
        type = "careless"

        async def handle_message(self, message: Message) -> None:
            await self.ctx.step("connect", object)

    async with make_runtime(retry={"max_attempts": 1}) as rt:
        await rt.spawn(Careless, id="careless")
        with pytest.raises(HandlerError) as caught:
            await rt.ask("agent:careless", Message("go"), timeout=10)
        assert caught.value.error_type == StepResultNotJSON.__name__
        assert "'connect'" in caught.value.error_message


async def test_a_step_returns_what_a_rerun_would_read_back(make_runtime: MakeRuntime) -> None:
    class Shapes(Agent):
        type = "shapes"

        async def handle_message(self, message: Message) -> Message:
            value = await self.ctx.step("pair", lambda: (1, 2))
            return message.reply({"is_list": isinstance(value, list)})

    async with make_runtime() as rt:
        await rt.spawn(Shapes, id="shapes")
        reply = await rt.ask("agent:shapes", Message("go"), timeout=10)
    assert reply.payload == {"is_list": True}  # a tuple reads back from JSON as a list


async def test_a_step_outside_a_handler_just_runs(make_runtime: MakeRuntime) -> None:
    class Starter(Agent):
        type = "starter"

        async def start(self) -> None:
            await self.ctx.step("warm up", lambda: effects.update(["warm"]))

        async def handle_message(self, message: Message) -> None:
            return None

    async with make_runtime() as rt:
        await rt.spawn(Starter, id="starter")
    assert effects == {"warm": 1}


async def test_subscribers_of_one_topic_message_send_distinct_messages(
    make_runtime: MakeRuntime,
) -> None:
    class Relay(Agent):
        type = "relay"
        topics = ("news.*",)

        async def handle_message(self, message: Message) -> None:
            await self.ctx.send("agent:sink", Message("relayed", {"by": self.id}))

    async with make_runtime() as rt:
        await rt.spawn(Sink, id="sink")
        await rt.spawn(Relay, id="relay-1")
        await rt.spawn(Relay, id="relay-2")
        await rt.publish("news.today", Message("news"))
        await eventually(lambda: len(Sink.received) == 2)
    assert {m.payload["by"] for m in Sink.received} == {"relay-1", "relay-2"}
    assert len({m.id for m in Sink.received}) == 2  # one topic message, two handlings


async def test_a_step_that_raised_runs_again_on_the_rerun(make_runtime: MakeRuntime) -> None:
    class Flaky(Agent):
        type = "flaky"

        async def handle_message(self, message: Message) -> Message:
            done = await self.ctx.step("once", lambda: effects.update(["once"]) or "ok")
            attempt = await self.ctx.step("call", call_flaky)
            return message.reply({"done": done, "attempt": attempt})

    def call_flaky() -> int:
        effects["call"] += 1
        if effects["call"] == 1:
            raise ConnectionError("service away")
        return effects["call"]

    async with make_runtime(retry={"max_attempts": 3, "base_delay": 0.0, "jitter": 0.0}) as rt:
        await rt.spawn(Flaky, id="flaky")
        reply = await rt.ask("agent:flaky", Message("go"), timeout=10)
    assert reply.payload == {"done": "ok", "attempt": 2}
    assert effects == {"once": 1, "call": 2}


async def test_a_gather_that_fails_cancels_the_rest_and_a_rerun_keeps_what_finished(
    make_runtime: MakeRuntime,
) -> None:
    class Picky(Agent):
        """Fails topic "bad" the first time it is asked (no retry: the asker gets the error)."""

        type = "picky"
        max_attempts = 1

        async def handle_message(self, message: Message) -> Message:
            topic = message.payload["topic"]
            effects[f"asked {topic}"] += 1
            if topic == "bad" and effects["asked bad"] == 1:
                raise ValueError("not now")
            return message.reply({"topic": topic})

    class FanOut(Agent):
        type = "fan_out"

        async def handle_message(self, message: Message) -> Message:
            ctx = self.ctx
            try:
                replies = await ctx.gather(
                    *[
                        ctx.ask("agent:picky", Message("q", {"topic": t}), timeout=5)
                        for t in ("good", "bad")
                    ]
                )
            except HandlerError:  # the asked agent's error, as a single ask raises it
                effects["gather raised HandlerError"] += 1
                raise
            return message.reply({"topics": [r.payload["topic"] for r in replies]})

    settings = {"retry": {"max_attempts": 2, "base_delay": 0.0, "jitter": 0.0}}
    async with make_runtime(**settings) as rt:
        await rt.spawn(Picky, id="picky")
        await rt.spawn(FanOut, id="fan_out")
        reply = await rt.ask("agent:fan_out", Message("go"), timeout=10)
    assert reply.payload == {"topics": ["good", "bad"]}  # in the order asked
    # "good" finished before "bad" failed the gather: the re-run did not ask it again.
    assert effects == {"asked good": 1, "asked bad": 2, "gather raised HandlerError": 1}
    assert rt.dead_letters.by_reason["max_attempts"] == 1  # picky's failure, not fan_out's


async def test_an_agent_that_asks_itself_fails_at_once_naming_the_mistake(
    make_runtime: MakeRuntime,
) -> None:
    """It handles one message at a time: its own question would wait behind the handler
    asking it until the ask timed out."""

    class Narcissus(Agent):
        type = "narcissus"
        max_attempts = 1

        async def handle_message(self, message: Message) -> Message:
            return await self.ctx.ask(self.ctx.self_ref, Message("q"), timeout=30)

    async with make_runtime() as rt:
        await rt.spawn(Narcissus, id="narcissus")
        with pytest.raises(HandlerError, match="asked itself"):
            await rt.ask("agent:narcissus", Message("go"), timeout=10)


async def test_a_rerun_takes_an_answer_it_asks_again_for_from_the_record() -> None:
    """Across nodes, a re-run's question may be skipped as a copy of one another consumer is
    answering — to the earlier run's node, perhaps gone. The re-run then finds the answer in
    the receiver's record instead of waiting out its ask."""
    from mas.actors.workflow import RERUN_KEY
    from mas.testing import TestRuntime
    from mas.testing.journal import MemoryJournal

    class Mute(Agent):
        type = "mute"

        async def handle_message(self, message: Message) -> None:
            return None  # this copy gets no answer

    class Asker(Agent):
        type = "asker"

        async def handle_message(self, message: Message) -> Message:
            answer = await self.ctx.ask("agent:mute", Message("q"), timeout=5)
            return message.reply(answer.payload)

    journal = MemoryJournal()
    request = Message("go", target="agent:asker", metadata={RERUN_KEY: True})
    question_id = derived_id(f"{request.id}/agent:asker", 0)
    journal.processed["mute-elsewhere"] = [question_id]  # answered by another node's agent
    journal.replies[question_id] = Message("q.reply", {"answer": 42})
    async with TestRuntime(journal=journal) as rt:
        await rt.spawn(Mute, id="mute")
        await rt.spawn(Asker, id="asker")
        reply = await rt.ask("agent:asker", request, timeout=10)
    assert reply.payload == {"answer": 42}


async def test_an_answer_that_comes_as_its_handler_is_cancelled_is_not_left_unretrieved() -> None:
    """A handler cancelled (its task ended) in the very turn its ask's error answer came:
    the answer's task ended with an error nobody would have taken, which asyncio reports
    (and the test runner turns into a failure) once it is collected."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        answer: asyncio.Future[Message] = loop.create_future()
        waiting = asyncio.ensure_future(_reply_or_park(answer, 30.0, Wait(0.0)))
        await asyncio.sleep(0)  # it waits for the answer
        answer.set_exception(Rejected("over budget"))
        waiting.cancel()  # in the same turn
        with pytest.raises(asyncio.CancelledError):
            await waiting
        del answer, waiting
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in reported] == []
