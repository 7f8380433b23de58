"""`mas replay` of a trace whose agents called a model: the LLM planner's plan and the
writers' answers are taken from the record, so the replay calls no model (the one it is
given does not answer), and gives what the recording gave; `--rerun-steps` calls it again.
The recording runs against a real chat-completions server that counts its calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mas import Message
from mas.agents import PlannerAgent
from mas.config import Settings
from mas.runtime import Runtime
from tests.unit.agents.model_server import ModelServer, model
from tests.unit.persistence.replay_shapes import ModelWriter
from tests.unit.persistence.test_replay_cli import mas_replay

__all__ = ["model"]

pytestmark = pytest.mark.anyio

TRACE = "5cf92f3577b34da6a3ce929d0e0e4737"
ROOT = Path(__file__).resolve().parents[3]
PLAN = {
    "steps": [
        {"id": "tide", "capability": "write", "input": {"topic": "tides"}},
        {"id": "moon", "capability": "write", "input": {"topic": "the moon"}},
    ]
}
AGENTS = (
    "--agents",
    "mas.agents.planner:PlannerAgent",
    "--agents",
    "tests.unit.persistence.replay_shapes:ModelWriter",
)


async def _record(url: str, model: ModelServer) -> Message:
    model.script = [json.dumps(PLAN), "the sea follows", "the moon pulls"]
    settings = Settings(database_url=url, persist=True, log_level="WARNING", llm=model.settings())
    async with Runtime(settings) as rt:
        await rt.spawn(PlannerAgent, id="planner")
        await rt.spawn(ModelWriter, id="writer")
        goal = Message("goal", {"goal": "two lines about the sea"}, trace_id=TRACE)
        return await rt.ask("agent:planner", goal, timeout=20)


async def test_a_planner_trace_replays_from_the_record_without_calling_the_model(
    sqlite_url: str, model: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = await _record(sqlite_url, model)
    assert model.calls == 3
    assert sorted(step["line"] for step in outcome.payload["steps"].values()) == [
        "THE MOON PULLS",
        "THE SEA FOLLOWS",
    ]
    # A model that does not answer: a replay that called it would fail.
    monkeypatch.setenv("MAS_LLM__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("MAS_LLM__ATTEMPTS", "1")
    code, out, err = await mas_replay(
        "--trace", TRACE, "--url", sqlite_url, *AGENTS, cwd=ROOT, pythonpath=ROOT
    )
    assert code == 0, out + err
    assert "3 recorded steps are taken from the record" in out
    assert "identical" in out
    assert model.calls == 3

    code, out, err = await mas_replay(
        "--trace", TRACE, "--url", sqlite_url, "--rerun-steps", *AGENTS, cwd=ROOT, pythonpath=ROOT
    )
    assert code != 0, out + err  # run again, the plan needs the model, which is not there
    assert model.calls == 3
