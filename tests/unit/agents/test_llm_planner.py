"""The LLM planner against a real HTTP server speaking the chat-completions protocol.

The server (aiohttp, started by each test) answers from a script: a 429 with Retry-After, a
500, a slow answer, a refusal, malformed JSON, a plan that does not validate, a good plan. It
counts the calls and keeps each request, so a test can assert what the model was told and
that a recorded plan is never paid for twice.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest
from aiohttp import web

from mas import DeadLetter, Message, TaskResult
from mas.actors.clock import LoopClock
from mas.agents.calc import CalcAgent
from mas.agents.llm import ChatClient, ModelUnavailable
from mas.agents.planner import PlannerAgent, PlanStep
from mas.config import RetrySettings, Settings
from mas.testing import TestRuntime
from tests.unit.agents.model_server import GOOD_PLAN, KEY, ModelServer, model

__all__ = ["model"]

pytestmark = pytest.mark.anyio


class CrashingPlanner(PlannerAgent):
    """Crashes once after its plan was recorded (before any step): the retry must not ask
    the model again."""

    type = "crashing_planner"
    crashed: ClassVar[bool] = False

    async def ask_wave(
        self, wave: list[PlanStep], answers: dict[str, dict[str, Any]]
    ) -> list[Message]:
        if not CrashingPlanner.crashed:
            CrashingPlanner.crashed = True
            raise RuntimeError("the worker died here (test)")
        return await super().ask_wave(wave, answers)


async def run_goal(
    model: ModelServer,
    planner: type[PlannerAgent] = PlannerAgent,
    letters: list[DeadLetter] | None = None,
    **llm: Any,
) -> TaskResult:
    """The task's end; `letters` gets the dead letters of the run."""
    results: list[TaskResult] = []

    async def record(result: TaskResult, message: Message) -> None:
        results.append(result)

    settings = Settings(
        llm=model.settings(**llm),
        retry=RetrySettings(max_attempts=3, base_delay=0.0, max_delay=0.0),
    )
    async with TestRuntime(settings, clock=LoopClock()) as rt:
        rt.add_task_listener(record)
        await rt.spawn(planner, id="planner")
        await rt.spawn(CalcAgent, id="calc")
        goal = Message("goal", {"goal": "the answer, plus one"}, metadata={"task_id": "t-1"})
        await rt.tell(f"type:{planner.type}", goal)
        await rt.settle()
        if letters is not None:
            letters.extend(rt.dead_letters.recent)
    [result] = results
    return result


async def test_a_busy_server_and_bad_plans_are_retried_until_a_plan_validates(
    model: ModelServer, capsys: pytest.CaptureFixture[str]
) -> None:
    unknown = {"steps": [{"id": "a", "capability": "fly", "input": {}}]}
    model.script = [
        web.json_response(
            {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.05"}
        ),
        web.json_response({"error": {"message": "oops"}}, status=500),
        '```json\n{"steps": [\n```',  # malformed JSON, in a code fence
        unknown,  # a capability nobody offers
        "```json\n" + json.dumps(GOOD_PLAN) + "\n```",
    ]
    result = await run_goal(model, prompt_price=1.0, completion_price=2.0)
    assert result.status == "succeeded", result
    assert result.result["result"] == {"expression": "42 + 1", "value": 43}
    assert model.calls == 5
    # Each refused plan was shown back to the model with the reason.
    fourth, fifth = model.requests[3]["messages"], model.requests[4]["messages"]
    assert fourth[-1]["role"] == "user" and "That plan was refused" in fourth[-1]["content"]
    assert "no agent offers ['fly']" in fifth[-1]["content"]
    assert model.requests[0]["model"] == "test-model"
    assert "calc" in model.requests[0]["messages"][0]["content"]  # the capabilities offered
    # Three answers came with usage: their tokens, at the prices set, are the plan's cost.
    assert result.result["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "total_tokens": 45,
        "calls": 3,
        "cost": pytest.approx((30 * 1.0 + 15 * 2.0) / 1e6),
    }
    assert set(model.authorizations) == {f"Bearer {KEY}"}
    printed = capsys.readouterr()
    assert KEY not in printed.out + printed.err  # logged retries never show the key


async def test_a_recorded_plan_is_not_paid_for_twice_after_a_crash(model: ModelServer) -> None:
    model.script = [GOOD_PLAN]
    CrashingPlanner.crashed = False
    result = await run_goal(model, CrashingPlanner)
    assert CrashingPlanner.crashed
    assert result.status == "succeeded", result
    assert model.calls == 1  # the re-run took the recorded plan


async def test_a_plan_that_never_validates_is_a_dead_letter_at_once_saying_why(
    model: ModelServer,
) -> None:
    model.script = ['{"steps": []}']
    letters: list[DeadLetter] = []
    result = await run_goal(model, letters=letters, plan_attempts=2)
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "PlanError"
    assert "no valid plan in 2 answers" in result.error.message
    assert [(letter.reason, letter.attempts) for letter in letters] == [("rejected", 1)]
    assert model.calls == 2  # not asked again: no retry of the handler


async def test_a_refusal_fails_the_task_at_once_with_the_servers_reason(
    model: ModelServer,
) -> None:
    model.script = [web.json_response({"error": {"message": "invalid api key"}}, status=401)]
    result = await run_goal(model)
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "ModelRefused"
    assert "(401): invalid api key" in result.error.message
    assert model.calls == 1


async def test_a_server_too_slow_every_time_is_unavailable_after_the_attempts(
    model: ModelServer,
) -> None:
    model.script = [2.0]  # each answer comes after the 0.2 s timeout
    client = ChatClient(model.settings(timeout=0.2, attempts=2, retry_after_max=0.0))
    try:
        with pytest.raises(ModelUnavailable, match=r"no answer within 0.2 s \(2 attempts\)"):
            await client.complete([{"role": "user", "content": "hi"}])
    finally:
        await client.aclose()
    assert model.calls == 2


async def test_a_failed_step_makes_the_model_plan_again_knowing_why(model: ModelServer) -> None:
    failing = {"steps": [{"id": "a", "capability": "calc", "input": {"expression": "1 / 0"}}]}
    fixed = {"steps": [{"id": "a2", "capability": "calc", "input": {"expression": "6 * 7"}}]}
    model.script = [failing, fixed]
    result = await run_goal(model)
    assert result.status == "succeeded", result
    assert result.result["result"] == {"expression": "6 * 7", "value": 42}
    assert result.result["replans"] == 1
    assert result.result["usage"]["calls"] == 2
    told = json.loads(model.requests[1]["messages"][-1]["content"])
    assert told["goal"] == "the answer, plus one"
    assert told["previous_attempt"]["failed_step"] == "a"
    assert "divides by zero" in told["previous_attempt"]["error"]


async def test_past_its_replans_a_failed_step_fails_the_task_naming_it(model: ModelServer) -> None:
    failing = {"steps": [{"id": "a", "capability": "calc", "input": {"expression": "1 / 0"}}]}
    model.script = [failing]
    result = await run_goal(model, replans=1)
    assert result.status == "failed"
    assert result.error is not None and result.error.message.startswith("step a: ")
    assert model.calls == 2  # the plan, and one new plan
