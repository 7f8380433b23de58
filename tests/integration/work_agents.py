"""Agents that `mas worker` subprocesses host in the distributed tests."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mas import Agent, HandlerResult, Message, TaskError, TaskResult


class SlowEcho(Agent):
    """Awaits `payload.delay` seconds (I/O), appends its effect to a file, completes the task.

    The effects file (`MAS_TEST_EFFECTS`, one per worker) shows which worker ran which
    message, even for a worker killed before it recorded anything in the database.
    """

    type = "slow_echo"

    async def handle_message(self, message: Message) -> HandlerResult:
        await asyncio.sleep(float(message.payload.get("delay", 0)))
        _effect(message.id)
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, dict(message.payload))


class Fragile(Agent):
    """Fails while the file `MAS_TEST_FRAGILE` names exists (on each of its 2 attempts, so
    the message is dead-lettered); completes its task once the file is gone."""

    type = "fragile"
    max_attempts = 2

    async def handle_message(self, message: Message) -> HandlerResult:
        _effect(message.id)
        if _flagged():
            raise RuntimeError("fragile while the flag file exists")
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, dict(message.payload))


class Verdict(Agent):
    """Ends its task failed when `payload.refuse` gives a reason, succeeded (with the
    payload) otherwise: both ends on demand, on the first attempt."""

    type = "verdict"

    async def handle_message(self, message: Message) -> HandlerResult:
        assert message.task_id is not None
        reason = message.payload.get("refuse")
        if reason:
            return TaskResult.failed(message.task_id, TaskError("Refused", str(reason)))
        return TaskResult.succeeded(message.task_id, dict(message.payload))


def _flagged() -> bool:
    """Whether the file `MAS_TEST_FRAGILE` names exists."""
    flag = os.environ.get("MAS_TEST_FRAGILE")
    return flag is not None and Path(flag).exists()


def _effect(line: str) -> None:
    """Append `line` to this worker's effects file (`MAS_TEST_EFFECTS`), if it has one."""
    effects = os.environ.get("MAS_TEST_EFFECTS")
    if effects:
        with Path(effects).open("a") as sink:
            sink.write(f"{line}\n")


def _step_effect(message_id: str, step: int) -> int:
    """A durable step's side effect: `<message id>:<step>` appended to the effects file."""
    _effect(f"{message_id}:{step}")
    return step * 10


class StepPipeline(Agent):
    """Five durable steps (`ctx.step`), `payload.delay` seconds of I/O after each; completes
    the task with the steps' results. Each step's effect goes to the effects file, so a
    step done twice (by a killed worker and its successor) shows there."""

    type = "step_pipeline"

    async def handle_message(self, message: Message) -> HandlerResult:
        results = []
        for step in range(1, 6):
            results.append(await self.ctx.step(f"step {step}", _step_effect, message.id, step))
            await asyncio.sleep(float(message.payload.get("delay", 0)))
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"steps": results})


class SignalWaiter(Agent):
    """Waits (up to `payload.timeout` seconds) for the task's signal "approve"; completes
    the task with it."""

    type = "signal_waiter"

    async def handle_message(self, message: Message) -> HandlerResult:
        timeout = float(message.payload.get("timeout", 60))
        decision = await self.ctx.signal("approve", timeout=timeout)
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"decision": decision})


class TimedPipeline(Agent):
    """Step 1, a durable `ctx.sleep` of `payload.sleep` seconds, step 2; completes the task
    with both steps' results (effects as `StepPipeline`'s)."""

    type = "timed_pipeline"

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        first = await ctx.step("step 1", _step_effect, message.id, 1)
        await ctx.sleep(float(message.payload["sleep"]))
        second = await ctx.step("step 2", _step_effect, message.id, 2)
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"steps": [first, second]})


class EffectEcho(Agent):
    """Awaits `payload.delay` seconds, appends the message id to the effects file, replies
    with the payload: a child of a fan-out whose every handling shows in the file."""

    type = "effect_echo"

    async def handle_message(self, message: Message) -> HandlerResult:
        await asyncio.sleep(float(message.payload.get("delay", 0)))
        _effect(message.id)
        return message.reply(dict(message.payload))


class FanOut(Agent):
    """Asks `effect_echo` `payload.n` questions at once (`ctx.gather` of `ctx.ask`), and
    completes the task with the sum of the answers."""

    type = "fan_out"

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx, delay = self.ctx, message.payload.get("delay", 0)
        replies = await ctx.gather(
            *[
                ctx.ask("type:effect_echo", Message("q", {"i": i, "delay": delay}), timeout=120)
                for i in range(int(message.payload["n"]))
            ]
        )
        assert message.task_id is not None
        total = sum(int(reply.payload["i"]) for reply in replies)
        return TaskResult.succeeded(message.task_id, {"sum": total, "answers": len(replies)})


class LongAsk(Agent):
    """Step 1, an ask to `effect_echo` (answered after `payload.delay` seconds, waited for up
    to an hour: it parks), step 2; completes the task with the answer (effects as
    `StepPipeline`'s)."""

    type = "long_ask"

    async def handle_message(self, message: Message) -> HandlerResult:
        ctx = self.ctx
        first = await ctx.step("step 1", _step_effect, message.id, 1)
        question = Message("q", {"i": 7, "delay": message.payload["delay"]})
        reply = await ctx.ask("type:effect_echo", question, timeout=3600)
        second = await ctx.step("step 2", _step_effect, message.id, 2)
        assert message.task_id is not None
        return TaskResult.succeeded(
            message.task_id, {"steps": [first, second], "answer": reply.payload["i"]}
        )
