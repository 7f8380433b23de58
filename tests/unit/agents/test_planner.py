"""The planner: a goal becomes a plan of capability steps, run as a durable workflow."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, ClassVar

import pytest

from mas import Agent, Message, TaskResult
from mas.actors.clock import LoopClock
from mas.agents.calc import CalcAgent
from mas.agents.planner import PlanError, PlannerAgent, PlanStep, RulePlanner, resolve_input
from mas.agents.summarize import SummarizeAgent
from mas.config import RetrySettings, Settings
from mas.testing import TestRuntime

pytestmark = pytest.mark.anyio

asked: Counter[str] = Counter()


class CountingCalc(CalcAgent):
    """CalcAgent counting what it was asked (a paid call, in a real plan)."""

    type = "counting_calc"

    async def handle_message(self, message: Message) -> Any:
        asked[message.payload["expression"]] += 1
        return await super().handle_message(message)


class FlakyPlanner(PlannerAgent):
    """Crashes once after its first wave answered: the retry must not ask that wave again."""

    type = "flaky_planner"
    crashed: ClassVar[bool] = False

    async def ask_wave(
        self, wave: list[PlanStep], answers: dict[str, dict[str, Any]]
    ) -> list[Message]:
        if answers and not FlakyPlanner.crashed:
            FlakyPlanner.crashed = True
            raise RuntimeError("the worker died here (test)")
        return await super().ask_wave(wave, answers)


async def run_task(payload: dict[str, Any], planner: type[Agent] = PlannerAgent) -> TaskResult:
    results: list[TaskResult] = []

    async def record(result: TaskResult, message: Message) -> None:
        results.append(result)

    settings = Settings(retry=RetrySettings(max_attempts=3, base_delay=0.0, max_delay=0.0))
    async with TestRuntime(settings, clock=LoopClock()) as rt:  # real time: asks wait
        rt.add_task_listener(record)
        await rt.spawn(planner, id="planner")
        await rt.spawn(CountingCalc, id="calc")
        await rt.spawn(SummarizeAgent, id="summarize")
        task = Message("goal", payload, metadata={"task_id": "t-1"})
        await rt.tell(f"type:{planner.type}", task)
        await rt.settle()
    [result] = results
    return result


@pytest.fixture(autouse=True)
def _fresh() -> None:
    asked.clear()
    FlakyPlanner.crashed = False


async def test_a_brief_summarizes_and_computes_in_one_parallel_wave() -> None:
    text = "Tides are caused by the moon. Cats like fish. The moon pulls the oceans."
    result = await run_task({"kind": "brief", "text": text, "expressions": ["6*7", "2**8"]})
    assert result.status == "succeeded", result
    steps = result.result["steps"]
    assert steps["calc1"] == {"expression": "6*7", "value": 42}
    assert steps["calc2"] == {"expression": "2**8", "value": 256}
    assert steps["summary"]["summary"].startswith("Tides are caused by the moon.")
    assert [s["id"] for s in result.result["plan"]["steps"]] == ["summary", "calc1", "calc2"]
    assert result.result["result"] == steps["calc2"]  # the last step's answer
    assert asked == {"6*7": 1, "2**8": 1}


async def test_a_step_gets_the_answer_of_the_step_it_depends_on() -> None:
    steps = [
        {"id": "base", "capability": "calc", "input": {"expression": "20 + 1"}},
        {"id": "twice", "capability": "calc", "input": {"expression": "21 * 2"}},
        {
            "id": "echoed",
            "capability": "summarize",
            "input": {"text": "$twice.expression", "sentences": 1},
            "depends_on": ["base", "twice"],
        },
    ]
    result = await run_task({"steps": steps})
    assert result.status == "succeeded", result
    assert result.result["result"] == {"summary": "21 * 2"}


def test_an_input_takes_earlier_answers_whole_as_a_field_or_inside_a_text() -> None:
    answers = {"a": {"value": 21, "tags": ["x"]}, "b": {"text": "hi"}}
    given = {
        "whole": "$a",
        "field": "$a.tags",
        "text": "${a.value} * 2 says ${b.text}",
        "nested": [{"deep": "$b.text"}],
        "plain": "costs $5",
    }
    assert resolve_input(given, answers) == {
        "whole": {"value": 21, "tags": ["x"]},
        "field": ["x"],
        "text": "21 * 2 says hi",
        "nested": [{"deep": "hi"}],
        "plain": "costs $5",
    }
    with pytest.raises(PlanError, match="answered without 'nope'"):
        resolve_input("${a.nope}", answers)


async def test_a_crash_after_a_wave_answered_does_not_ask_that_wave_again() -> None:
    steps = [
        {"id": "first", "capability": "calc", "input": {"expression": "1 + 1"}},
        {"id": "second", "capability": "calc", "input": {"expression": "2 + 2"}},
        {
            "id": "last",
            "capability": "calc",
            "input": {"expression": "3 + 3"},
            "depends_on": ["first", "second"],
        },
    ]
    result = await run_task({"steps": steps}, FlakyPlanner)
    assert result.status == "succeeded", result
    assert FlakyPlanner.crashed
    assert asked == {"1 + 1": 1, "2 + 2": 1, "3 + 3": 1}


async def test_a_failing_step_fails_the_task_naming_the_step() -> None:
    steps = [
        {"id": "fine", "capability": "calc", "input": {"expression": "1 + 1"}},
        {"id": "broken", "capability": "calc", "input": {"expression": "1 / 0"}},
    ]
    result = await run_task({"steps": steps})
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.type == "Rejected"  # calc rejected it: asked once, no retry
    assert result.error.message.startswith("step broken: ")
    assert "divides by zero" in result.error.message
    assert asked == {"1 + 1": 1, "1 / 0": 1}


@pytest.mark.parametrize(
    ("goal", "why"),
    [
        ({"goal": "anything"}, "give its steps"),
        ({"kind": "poem"}, "not 'poem'"),
        ({"steps": []}, "at least 1"),
        (
            {"steps": [{"id": "a", "capability": "calc", "depends_on": ["b"]}]},
            "unknown steps ['b']",
        ),
        (
            {
                "steps": [
                    {"id": "a", "capability": "calc", "depends_on": ["b"]},
                    {"id": "b", "capability": "calc", "depends_on": ["a"]},
                ]
            },
            "in a cycle",
        ),
        (
            {"steps": [{"id": "a", "capability": "calc"}, {"id": "a", "capability": "calc"}]},
            "unique",
        ),
        (
            {
                "steps": [
                    {"id": "a", "capability": "calc"},
                    {"id": "b", "capability": "calc", "input": {"expression": "$a.value"}},
                ]
            },
            "without depending on it",
        ),
        ({"steps": [{"id": "a", "capability": "not a name"}]}, "capability"),
    ],
)
async def test_a_goal_that_cannot_be_planned_is_refused_saying_why(
    goal: dict[str, Any], why: str
) -> None:
    with pytest.raises(PlanError, match=re.escape(why)):
        await RulePlanner().plan(goal, ["calc"])
    result = await run_task(goal)
    assert result.status == "failed"
    assert result.error is not None and why in result.error.message
    assert not asked
