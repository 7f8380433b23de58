"""Every script in examples/ runs and prints what its docstring promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from tests.unit.agents.model_server import ModelServer, model

__all__ = ["model"]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_example_has_a_test() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == [
        "approval.py",
        "llm_planner.py",
        "planner.py",
        "quickstart.py",
        "supervision.py",
        "workflow.py",
    ]


def test_quickstart_prints_the_greeting() -> None:
    assert run("quickstart.py").strip() == "hello ada"


@pytest.mark.parametrize("line", ["total before the crash: 3", "total after the restart: 0"])
def test_supervision_example_restarts_the_rest_of_the_pipeline(line: str) -> None:
    out = run("supervision.py")
    assert line in out
    assert "dead letter: max_attempts after 2 attempts" in out


def test_workflow_example_resumes_without_redoing_finished_steps() -> None:
    out = run("workflow.py").splitlines()
    assert out == [
        "notes on tides",
        "notes on moons",
        "notes on orbits",
        "split 1 time(s), 3 research call(s)",  # the crash cost no second call
    ]


def test_approval_example_waits_for_the_signal_and_shows_the_tree() -> None:
    assert run("approval.py").splitlines() == [
        "task running, waiting for: approve",
        "task succeeded: {'policy': 'within policy', 'approved': True, 'by': 'maria'}",
        "steps: step check, sleep sleep, signal approve",
    ]


def test_planner_example_runs_a_brief_and_a_chained_plan() -> None:
    assert run("planner.py").splitlines() == [
        "plan: summary (summarize), calc1 (calc), calc2 (calc)",
        'summary: {"summary": "Tides rise and fall twice a day. The moon pulls the oceans and '
        'makes the tides."}',
        'calc1: {"expression": "365 * 2", "value": 730}',
        'calc2: {"expression": "24 * 60", "value": 1440}',
        'chained result: {"expression": "730 * 1440", "value": 1051200}',
    ]


LLM_PLAN = {
    "steps": [
        {"id": "minutes", "capability": "calc", "input": {"expression": "2 * 365 * 24 * 60"}},
        {
            "id": "verse",
            "capability": "write",
            "input": {"number": "${minutes.value}"},
            "depends_on": ["minutes"],
        },
    ]
}


@pytest.mark.anyio
async def test_llm_planner_example_runs_the_models_plan(model: ModelServer) -> None:
    model.script = [json.dumps(LLM_PLAN), "A million minutes, and then some more."]
    env = {**os.environ, "MAS_LLM__BASE_URL": model.url, "MAS_LLM__MODEL": "test-model"}
    done = await anyio.run_process(
        [sys.executable, str(EXAMPLES / "llm_planner.py")], env=env, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == [
        "plan: minutes (calc), verse (write)",
        'minutes: {"expression": "2 * 365 * 24 * 60", "value": 1051200}',
        'verse: {"line": "A million minutes, and then some more."}',
        "planning: 1 model call(s), 15 tokens",
    ]
    assert "calc, summarize, write" in model.requests[0]["messages"][0]["content"]
    assert json.loads(model.requests[1]["messages"][0]["content"].split(": ", 1)[1]) == {
        "number": "1051200"
    }


def test_llm_planner_example_says_what_to_set_without_a_model() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAS_LLM__")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "llm_planner.py")],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "MAS_LLM__BASE_URL" in done.stderr
