"""`mas demo`: a short end-to-end scenario in one process."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import anyio
import typer

from mas.actors.agent import Agent, HandlerResult
from mas.config import RetrySettings, Settings
from mas.errors import HandlerError
from mas.messages import Message
from mas.observability.logging import configure_logging
from mas.runtime import Runtime


class _Flaky(Agent):
    """Crashes on every message of type `poison`, and on the first `flaky` message."""

    type = "flaky"
    crashed_once = False

    async def handle_message(self, message: Message) -> HandlerResult:
        if message.type == "poison":
            raise ValueError("cannot digest this payload")
        if message.type == "flaky" and not _Flaky.crashed_once:
            _Flaky.crashed_once = True
            raise ConnectionError("simulated outage")
        return message.reply({"ok": True, "seen": message.type})


async def _demo() -> dict[str, int]:
    from mas.agents import CalcAgent, EchoAgent, PlannerAgent, SummarizeAgent

    settings = Settings(
        log_level="ERROR", retry=RetrySettings(max_attempts=3, base_delay=0.02, max_delay=0.1)
    )
    say = typer.echo
    async with Runtime(settings) as rt:
        workers = await rt.spawn_supervisor("workers", strategy="one_for_one", max_restarts=10)
        echo = await workers.spawn(EchoAgent, id="echo")
        flaky = await workers.spawn(_Flaky, id="flaky")
        say(f"mas demo: one process, {type(rt.transport).__name__}, node {rt.node_id}")
        say("agents: echo (EchoAgent), flaky (crashes on cue), under supervisor 'workers'\n")

        started = time.perf_counter()
        reply = await echo.ask(Message("greet", {"text": "hello"}), timeout=2)
        elapsed_ms = (time.perf_counter() - started) * 1000
        say(f"1. ask echo            -> reply {reply.payload} in {elapsed_ms:.2f} ms")

        reply = await flaky.ask(Message("flaky", {"n": 1}), timeout=5)
        say(
            f"2. ask flaky (crashes) -> crashed once, supervisor restarted it "
            f"(restarts={rt.restarts}), the retried message got {reply.payload}"
        )

        async with rt.dead_letters.subscribe() as letters:
            try:
                await flaky.ask(Message("poison", {"n": 2}), timeout=5)
            except HandlerError as exc:
                say(f"3. ask flaky (poison)  -> HandlerError: {exc}")
            letter = await letters.get()
        say(
            f"   dead letter: type={letter.message.type} reason={letter.reason} "
            f"attempts={letter.attempts} error={letter.error_type}: {letter.error_message}"
        )

        await rt.spawn(PlannerAgent, id="planner")
        await rt.spawn(SummarizeAgent, id="summarize")
        for n in range(2):
            await rt.spawn(CalcAgent, id=f"calc-{n}")
        goal = {
            "kind": "brief",
            "text": "Agents are actors. Each has a mailbox. Supervisors restart crashed agents.",
            "expressions": ["60 * 60 * 24", "2 ** 10"],
        }
        reply = await rt.ask("agent:planner", Message("goal", goal), timeout=10)
        steps = reply.payload["steps"]
        say(
            "4. ask planner (brief) -> plan "
            + ", ".join(f"{s['id']}:{s['capability']}" for s in reply.payload["plan"]["steps"])
            + " ran at once on other agents"
        )
        say(
            f"   calc1={steps['calc1']['value']} calc2={steps['calc2']['value']} "
            f"summary={steps['summary']['summary']!r}"
        )
        await rt.settle()
        stats = rt.stats()
    say(
        "\nsummary: "
        + " ".join(f"{key}={value}" for key, value in stats.items() if key != "in_queue")
    )
    return stats


def demo(
    log_level: Annotated[
        str,
        typer.Option(
            metavar="LEVEL", help="also show the runtime's JSON logs at this level (on stderr)"
        ),
    ] = "ERROR",
) -> None:
    """Run a short scenario in one process: an ask, a crash and restart, a dead letter, and
    a planner's plan run by other agents."""
    configure_logging(log_level, "json", sys.stderr)
    stats = anyio.run(_demo)
    if stats["dead_letters"] != 1 or stats["restarts"] < 1:
        typer.echo("demo did not behave as expected", err=True)
        raise typer.Exit(1)
