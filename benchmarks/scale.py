"""Costs that grow with a deployment (issue 19): waking idle agents among many, and a crash.

Run (from the repository root):

    uv run python benchmarks/scale.py [--quick] [--reps N] [--only many,crash]
    uv run python benchmarks/scale.py --instructions     # callgrind counts per operation

Scenarios:

    many_<N>  N idle agents (10k and 100k; --quick: 1k and 10k). Each round sends one message
              to every agent and waits until all were handled, so every message finds its
              agent idle and pays its activation: µs per message. Against `minimal` (an
              asyncio.Queue and one task per actor, benchmarks/actors.py).
    crash     one agent whose handler raises on every message (all sent at once, the
              mailbox bounding them); one_for_one restart, no retry
              (MAS_RETRY__MAX_ATTEMPTS=1): µs per crash. `mas` logs at INFO as JSON into a
              null stream (what `mas worker` writes for each crash); `mas_quiet` at ERROR
              (no line: the cost without logging); `minimal` is a hand-written restart: the
              actor's loop catches the error and makes a fresh handler object.
    crash_among_<N>  the same crash with N idle siblings under the root supervisor (100k;
              --quick: 10k): a crash must not cost more among many agents.

Contenders alternate within each repetition (A/B/A/B, the order rotating), so drift in the
machine's load hits both; the report gives medians and the ratio minimal/mas (>1: mas is
cheaper). `--instructions` runs each contender in a subprocess under
`valgrind --tool=callgrind` at two sizes, and again up to the timed section only, and
reports the timed section's difference per operation, which start-up and set-up cancel
out of and load does not change.

JSON goes to stdout and benchmarks/results/scale.json; progress and the table to stderr.
Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from actors import Idle, MinimalActor, _messages, _settings, _settle_gc

from mas import Agent, Message, Runtime, Settings
from mas.observability import configure_logging

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "scale.json"
SETUP_ONLY = threading.Event()  # --probe --setup-only: stop where the timed section starts


class Rounds:
    """Counts handled messages; sets the round's event once every agent handled its one."""

    __slots__ = ("count", "event", "target")

    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.event = asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()
        self.count = 0
        self.event.clear()


class Sleeper(Agent):
    """Counts its messages: idle between rounds, woken by each."""

    type = "bench_sleeper"

    def __init__(self, rounds: Rounds) -> None:
        self.rounds = rounds

    async def handle_message(self, message: Message) -> None:
        self.rounds.hit()


class Crasher(Sleeper):
    """Fails on every message: each one is a crash and a restart."""

    type = "bench_crasher"

    async def handle_message(self, message: Message) -> None:
        self.rounds.hit()
        raise RuntimeError("crash")


# -- many idle agents ------------------------------------------------------------------------


async def _rounds(
    tells: list[Callable[[Message], Awaitable[None]]], rounds: int, counter: Rounds
) -> float:
    """Time `rounds` rounds of one message to each of `tells`, each waited for."""
    batches = [_messages(len(tells), "wake") for _ in range(rounds)]
    if SETUP_ONLY.is_set():
        return 0.0
    _settle_gc()
    start = time.perf_counter()
    for batch in batches:
        for tell, message in zip(tells, batch, strict=True):
            await tell(message)
        await counter.wait()
    return time.perf_counter() - start


async def mas_many(agents: int, rounds: int) -> float:
    counter = Rounds(agents)
    async with Runtime(_settings()) as rt:
        refs = [
            await rt.spawn(functools.partial(Sleeper, counter), id=f"s{i}") for i in range(agents)
        ]
        return await _rounds([ref.tell for ref in refs], rounds, counter)


async def minimal_many(agents: int, rounds: int) -> float:
    counter = Rounds(agents)

    async def handle(message: Any) -> None:
        counter.hit()

    actors = [MinimalActor(handle) for _ in range(agents)]
    elapsed = await _rounds([actor.tell for actor in actors], rounds, counter)
    for actor in actors:
        actor.task.cancel()
    await asyncio.gather(*(actor.task for actor in actors), return_exceptions=True)
    return elapsed


# -- a crash and its restart -----------------------------------------------------------------


def _crash_settings(level: str) -> Settings:
    return Settings(
        log_level=level,
        retry={"max_attempts": 1},
        supervisor={"max_restarts": 10**9, "period": 1.0, "backoff_base": 0.0},
    )


async def mas_crash(crashes: int, level: str = "INFO", siblings: int = 0) -> float:
    configure_logging(level, stream=io.StringIO() if level == "ERROR" else _Null())
    counter = Rounds(crashes)
    try:
        async with Runtime(_crash_settings(level)) as rt:
            for n in range(siblings):  # idle agents under the same supervisor
                await rt.spawn(Idle, id=f"idle-{n}")
            ref = await rt.spawn(functools.partial(Crasher, counter), id="crasher")
            messages = _messages(crashes, "crash")
            if SETUP_ONLY.is_set():
                return 0.0
            _settle_gc()
            start = time.perf_counter()
            for message in messages:
                await ref.tell(message)
            await counter.wait()
            await rt.settle()  # the last restart is part of the last crash
            return time.perf_counter() - start
    finally:
        configure_logging("WARNING")  # as the other scenarios run


class _Null(io.TextIOBase):
    """A stream that takes every line and keeps none (the lines are still rendered)."""

    def write(self, text: str) -> int:
        return len(text)


class _Handler:
    """The state a hand-written restart throws away."""

    def __init__(self, counter: Rounds) -> None:
        self.counter = counter

    async def __call__(self, message: Any) -> None:
        self.counter.hit()
        raise RuntimeError("crash")


async def minimal_crash(crashes: int) -> float:
    """A hand-written restart: the loop catches the error and starts a fresh handler."""
    counter = Rounds(crashes)
    queue: asyncio.Queue[Any] = asyncio.Queue(1000)

    async def run() -> None:
        handler = _Handler(counter)
        while True:
            message = await queue.get()
            try:
                await handler(message)
            except Exception:
                handler = _Handler(counter)

    task = asyncio.get_running_loop().create_task(run())
    messages = _messages(crashes, "crash")
    if SETUP_ONLY.is_set():
        return 0.0
    _settle_gc()
    start = time.perf_counter()
    for message in messages:
        await queue.put(message)
    await counter.wait()
    elapsed = time.perf_counter() - start
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return elapsed


# -- running ---------------------------------------------------------------------------------

Trial = Callable[[int], Coroutine[Any, Any, float]]


def scenarios(quick: bool) -> dict[str, tuple[int, dict[str, Trial]]]:
    """Scenario -> (operations per trial, contender -> trial taking a size)."""
    found: dict[str, tuple[int, dict[str, Trial]]] = {}
    for agents in (1_000, 10_000) if quick else (10_000, 100_000):
        rounds = 3
        found[f"many_{agents}"] = (
            agents * rounds,
            {
                "mas": lambda n, a=agents: mas_many(a, n // a),
                "minimal": lambda n, a=agents: minimal_many(a, n // a),
            },
        )
    found["crash"] = (
        2_000 if quick else 10_000,
        {
            "mas": mas_crash,
            "mas_quiet": lambda n: mas_crash(n, "ERROR"),
            "minimal": minimal_crash,
        },
    )
    siblings = 10_000 if quick else 100_000
    found[f"crash_among_{siblings}"] = (
        500 if quick else 2_000,
        {
            "mas": lambda n, s=siblings: mas_crash(n, "INFO", s),
            "minimal": minimal_crash,
        },
    )
    return found


def timed(quick: bool, reps: int, only: set[str] | None) -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, (n, contenders) in scenarios(quick).items():
        if only and name.split("_")[0] not in only:
            continue
        runs: dict[str, list[float]] = {contender: [] for contender in contenders}
        order = list(contenders)
        for rep in range(reps):
            for contender in order[rep % len(order) :] + order[: rep % len(order)]:
                seconds = asyncio.run(contenders[contender](n))
                runs[contender].append(seconds)
                print(f"  {name} {contender}: {seconds / n * 1e6:.2f} µs/op", file=sys.stderr)
        medians = {c: statistics.median(r) / n * 1e6 for c, r in runs.items()}
        report[name] = {
            "ops": n,
            "us_per_op": medians,
            "runs_s": runs,
            "minimal_over_mas": medians["minimal"] / medians["mas"],
        }
    return report


COLLECTED = re.compile(r"Collected : (\d+)")


def _instructions(name: str, contender: str, n: int, quick: bool, *, setup: bool) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, __file__, "--probe", name, contender, str(n)]
    command += ["--quick"] if quick else []
    command += ["--setup-only"] if setup else []
    env = os.environ | {"PYTHONHASHSEED": "0"}  # the same dicts, so the same count each run
    done = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=3600, env=env
    )
    [count] = COLLECTED.findall(done.stderr)
    return int(count)


def instructions(quick: bool, only: set[str] | None) -> dict[str, Any]:
    """Instructions per operation of the timed section: what a run at 2n counts beyond one
    at n, less the same difference for the set-up alone (building messages, spawning)."""
    report: dict[str, Any] = {}
    for name, (n, contenders) in scenarios(quick).items():
        if only and name.split("_")[0] not in only:
            continue
        small = n // 3 if name.startswith("many") else n // 5  # whole rounds of agents
        per_op = {}
        for contender in contenders:
            counts = {
                (size, setup): _instructions(name, contender, size, quick, setup=setup)
                for size in (small, 2 * small)
                for setup in (False, True)
            }
            whole = counts[2 * small, False] - counts[small, False]
            setup = counts[2 * small, True] - counts[small, True]
            per_op[contender] = (whole - setup) / small
            print(f"  {name} {contender}: {per_op[contender]:,.0f} instr/op", file=sys.stderr)
        ratio = per_op["minimal"] / per_op["mas"]
        report[name] = {"instructions_per_op": per_op, "minimal_over_mas": ratio}
    return report


def table(report: dict[str, Any]) -> str:
    lines = []
    for name, result in report.items():
        key = "us_per_op" if "us_per_op" in result else "instructions_per_op"
        figures = ", ".join(f"{c} {v:,.2f}" for c, v in result[key].items())
        lines.append(f"{name:>12}  {key}: {figures}  minimal/mas {result['minimal_over_mas']:.2f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, 3 repetitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--only", default="", help="comma-separated: many, crash")
    parser.add_argument("--instructions", action="store_true", help="callgrind counts")
    parser.add_argument("--probe", nargs=3, metavar=("SCENARIO", "CONTENDER", "N"))
    parser.add_argument("--setup-only", action="store_true", help="with --probe")
    args = parser.parse_args()
    configure_logging("WARNING")  # what mas logs below that costs one comparison a line
    if args.probe:  # one run of one contender, for callgrind to count
        name, contender, n = args.probe
        if args.setup_only:
            SETUP_ONLY.set()
        asyncio.run(scenarios(args.quick)[name][1][contender](int(n)))
        return
    only = {each for each in args.only.split(",") if each} or None
    reps = args.reps or (3 if args.quick else 5)
    report = instructions(args.quick, only) if args.instructions else timed(args.quick, reps, only)
    print(table(report), file=sys.stderr)
    RESULTS_FILE.parent.mkdir(exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
