"""`mas replay --trace ID`: re-run a recorded trace in memory and compare the outputs.

Recorded by a persisting runtime, replayed by the real command in a subprocess: the same
agents give identical outputs (exit 0), a changed agent shows a diff (exit 1), and a trace
that was never recorded is an error (exit 2).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import pytest

from agents.echo import EchoAgent
from mas import Agent, HandlerResult, Message
from mas.config import Settings
from mas.runtime import Runtime

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
ROOT = Path(__file__).resolve().parents[3]  # where `tests.` imports from


class Greeter(Agent):
    """Says hello to whoever is named in the payload."""

    type = "greeter"

    async def handle_message(self, message: Message) -> HandlerResult:
        return message.reply({"greeting": f"hello {message.payload['name']}"})


CHANGED_GREETER = """
from mas import Agent, Message

class Greeter(Agent):
    type = "greeter"

    async def handle_message(self, message):
        return message.reply({"greeting": f"goodbye {message.payload['name']}"})
"""


async def record(url: str, agent: type[Agent], agent_id: str, payloads: list[dict]) -> None:
    """Ask `agent` once per payload, all in trace TRACE, with a persisting Runtime."""
    settings = Settings(database_url=url, persist=True, log_level="WARNING")
    async with Runtime(settings) as rt:
        await rt.spawn(agent, id=agent_id)
        for payload in payloads:
            await rt.ask(f"agent:{agent_id}", Message("ask", payload, trace_id=TRACE), timeout=5)


async def mas_replay(*args: str, cwd: Path, pythonpath: Path | None = None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAS_DATABASE")}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    result = await anyio.run_process(
        [sys.executable, "-m", "mas.cli", "replay", *args], cwd=cwd, env=env, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_replaying_a_trace_of_two_echo_asks_is_identical(
    sqlite_url: str, tmp_path: Path
) -> None:
    await record(sqlite_url, EchoAgent, "echo", [{"n": 1}, {"n": 2}])
    code, out, err = await mas_replay("--trace", TRACE, "--url", sqlite_url, cwd=tmp_path)
    assert code == 0, out + err
    assert "identical" in out
    assert "2 output messages" in out


async def test_replaying_a_message_sent_to_a_type_finds_the_agent_that_handled_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    """No `agent:` address in the trace (a message to `type:echo`, answered to nobody): the
    agent is the one the record says handled it."""
    settings = Settings(database_url=sqlite_url, persist=True, log_level="WARNING")
    async with Runtime(settings) as rt:
        await rt.spawn(EchoAgent, id="echo-1")
        await rt.tell("type:echo", Message("ask", {"n": 1}, trace_id=TRACE))
    code, out, err = await mas_replay("--trace", TRACE, "--url", sqlite_url, cwd=tmp_path)
    assert code == 0, out + err
    assert "agents ['echo-1']" in out
    assert "identical" in out


async def test_replaying_with_a_changed_agent_shows_the_difference(
    sqlite_url: str, tmp_path: Path
) -> None:
    await record(sqlite_url, Greeter, "greeter", [{"name": "ada"}])
    module_dir = tmp_path / "changed"
    module_dir.mkdir()
    (module_dir / "changed_greeter.py").write_text(CHANGED_GREETER)
    args = ("--trace", TRACE, "--url", sqlite_url, "--agents", "changed_greeter:Greeter")
    code, out, err = await mas_replay(*args, cwd=tmp_path, pythonpath=module_dir)
    assert code == 1, out + err
    assert "identical" not in out
    assert "hello ada" in out and "goodbye ada" in out


async def test_replaying_an_unknown_trace_is_an_error(sqlite_url: str, tmp_path: Path) -> None:
    await record(sqlite_url, EchoAgent, "echo", [{"n": 1}])
    code, out, err = await mas_replay("--trace", "no-such-trace", "--url", sqlite_url, cwd=tmp_path)
    assert code == 2, out + err
    assert "error:" in err
    assert "no-such-trace" in err
    assert "identical" not in out


SHAPES = [
    f"tests.unit.persistence.replay_shapes:{name}" for name in ("Summarizer", "Listener", "Archive")
]


async def test_replaying_a_capability_ask_finds_the_agent_that_offered_it(
    sqlite_url: str, tmp_path: Path
) -> None:
    from tests.unit.persistence.replay_shapes import Summarizer

    settings = Settings(database_url=sqlite_url, persist=True, log_level="WARNING")
    async with Runtime(settings) as rt:
        await rt.spawn(Summarizer, id="sum-1")
        ask = Message("summarize", {"text": "one two three"}, trace_id=TRACE)
        await rt.ask("capability:summarize", ask, timeout=5)
    args = ("--trace", TRACE, "--url", sqlite_url, "--agents", SHAPES[0])
    code, out, err = await mas_replay(*args, cwd=tmp_path, pythonpath=ROOT)
    assert code == 0, out + err
    assert "agents ['sum-1']" in out
    assert "identical: 1 output messages" in out


async def test_replaying_a_topic_message_through_three_hops_is_identical(
    sqlite_url: str, tmp_path: Path
) -> None:
    """A topic message, the subscriber's send to an agent, that agent's capability ask."""
    from tests.unit.persistence.replay_shapes import Archive, Listener, Summarizer

    settings = Settings(database_url=sqlite_url, persist=True, log_level="WARNING")
    async with Runtime(settings) as rt:
        await rt.spawn(Summarizer, id="sum-1")
        await rt.spawn(Archive, id="archive")
        await rt.spawn(Listener, id="listener-1")
        news = Message("news", {"title": "rain again today"}, trace_id=TRACE)
        await rt.publish("news.weather", news)
        await rt.settle()
    args = ["--trace", TRACE, "--url", sqlite_url]
    for spec in SHAPES:
        args += ["--agents", spec]
    code, out, err = await mas_replay(*args, cwd=tmp_path, pythonpath=ROOT)
    assert code == 0, out + err
    assert "agents ['archive', 'listener-1', 'sum-1']" in out
    # The listener's send, the archive's ask and the summarizer's reply.
    assert "identical: 3 output messages" in out
