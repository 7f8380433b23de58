"""Every script in examples/ runs and prints what its docstring promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
