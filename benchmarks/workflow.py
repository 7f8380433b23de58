"""Durable-step benchmarks: what recording a handler's steps costs, against the same work
unrecorded, in one run per backend (no persistence, SQLite, PostgreSQL).

Scenarios (messages per second, median of the repetitions; ratio = durable / plain):
- step:   each message's handler runs one function, through `ctx.step` vs called directly;
- ask:    each message's handler asks an echo agent, `ctx.ask` (a durable step: the reply
          is recorded, the question gets a derived id) vs `ctx.runtime.ask` (not a step);
- fanout: one message whose handler gathers N asks, `ctx.gather(ctx.ask...)` vs
          `asyncio.gather(runtime.ask...)`; per child.

Prints JSON (also benchmarks/results/workflow.json) and a table of ratios on stderr.
Run: `uv run python benchmarks/workflow.py [--quick] [--pg-url URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_db import PgUnreachable, migrated_pg_schema

from mas import Agent, Message, Runtime, Settings

RESULTS = Path(__file__).parent / "results" / "workflow.json"
TIMEOUT = 60.0


def work(i: int) -> int:
    return i * 2


class Echo(Agent):
    type = "echo"

    async def handle_message(self, message: Message) -> Message:
        return message.reply(message.payload)


class Worker(Agent):
    """Does the scenario's work per message, durably or not, and counts down."""

    type = "worker"
    mode = ""
    remaining = 0
    done: asyncio.Event

    async def handle_message(self, message: Message) -> None:
        ctx, i = self.ctx, message.payload["i"]
        if self.mode == "step":
            await ctx.step("work", work, i)
        elif self.mode == "plain_step":
            work(i)
        elif self.mode == "ask":
            await ctx.ask("agent:echo", Message("q", {"i": i}), timeout=TIMEOUT)
        elif self.mode == "plain_ask":
            await ctx.runtime.ask("agent:echo", Message("q", {"i": i}), timeout=TIMEOUT)
        elif self.mode == "fanout":
            await ctx.gather(
                *[ctx.ask("agent:echo", Message("q", {"i": j}), timeout=TIMEOUT) for j in range(i)]
            )
        elif self.mode == "plain_fanout":
            await asyncio.gather(
                *[
                    ctx.runtime.ask("agent:echo", Message("q", {"i": j}), timeout=TIMEOUT)
                    for j in range(i)
                ]
            )
        type(self).remaining -= 1
        if type(self).remaining == 0:
            type(self).done.set()


async def per_second(settings: Settings, mode: str, n: int) -> float:
    """Messages (or, for fan-out, children) handled per second in `mode`."""
    fanout = mode.endswith("fanout")
    messages = [Message("go", {"i": n if fanout else i}) for i in range(1 if fanout else n)]
    Worker.mode, Worker.remaining, Worker.done = mode, len(messages), asyncio.Event()
    async with Runtime(settings) as runtime:
        await runtime.spawn(Echo, id="echo")
        await runtime.spawn(Worker, id="worker")
        start = time.perf_counter()
        for message in messages:
            await runtime.tell("agent:worker", message)
        await asyncio.wait_for(Worker.done.wait(), TIMEOUT * 5)
        if runtime.journal is not None:
            await runtime.journal.flush()  # the records are part of the cost
        return n / (time.perf_counter() - start)


SCENARIOS = (("step", "plain_step"), ("ask", "plain_ask"), ("fanout", "plain_fanout"))


async def bench(name: str, settings: Settings, n: int, reps: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for durable, plain in SCENARIOS:
        print(f"[{name}] {durable} ...", file=sys.stderr)
        runs: dict[str, list[float]] = {durable: [], plain: []}
        for _ in range(reps):  # interleaved, so drift hits both alike
            for mode in (durable, plain):
                runs[mode].append(await per_second(settings, mode, n))
        medians = {mode: statistics.median(values) for mode, values in runs.items()}
        result[durable] = {
            "durable_per_s": medians[durable],
            "plain_per_s": medians[plain],
            "ratio": medians[durable] / medians[plain],
            "runs": runs,
        }
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    n, reps = (300, 2) if args.quick else (2_000, 3)
    base = {"log_level": "WARNING", "shutdown_timeout": TIMEOUT}
    report: dict[str, Any] = {"n": n, "reps": reps, "backends": {}}
    report["backends"]["none"] = await bench("none", Settings(**base), n, reps)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Settings(**base, persist=True, database_url=f"sqlite+aiosqlite:///{tmp}/b.db")
        report["backends"]["sqlite"] = await bench("sqlite", sqlite, n, reps)
    try:
        async with migrated_pg_schema(args.pg_url) as schema:
            pg = Settings(**base, persist=True, database_url=args.pg_url, database_schema=schema)
            report["backends"]["postgresql"] = await bench("postgresql", pg, n, reps)
    except PgUnreachable as exc:
        report["backends"]["postgresql"] = {"skipped": str(exc)}
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{'backend':<12}" + "".join(f"{s:>28}" for s, _ in SCENARIOS), file=sys.stderr)
    for name, result in report["backends"].items():
        if "skipped" in result:
            print(f"{name:<12} skipped: {result['skipped']}", file=sys.stderr)
            continue
        cells = "".join(
            f"{result[s]['durable_per_s']:>10,.0f} /{result[s]['plain_per_s']:>8,.0f} ="
            f"{result[s]['ratio']:>5.2f}x"
            for s, _ in SCENARIOS
        )
        print(f"{name:<12}{cells}", file=sys.stderr)
    print("(durable/s / plain/s = ratio; target >= 0.5x)", file=sys.stderr)


if __name__ == "__main__":
    from mas.observability import configure_logging

    configure_logging("WARNING")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    results = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print_table(results)
