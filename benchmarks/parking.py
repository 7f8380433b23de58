"""What a waiting workflow costs the process: parked (`ctx.sleep` past
`MAS_WORKFLOW__PARK_AFTER`) against held in its handler (the same wait, not parked), and
parked in a long `ctx.ask` (asked of an agent that never answers).

N workflows are started on K agents, each handler does a durable step then a long
`ctx.sleep` (or ask); once all N wait, the benchmark reads:
- Python heap held per waiting workflow (tracemalloc, after a GC, against before the run);
- asyncio tasks alive per waiting workflow;
- how long it took until all N waited (parks per second include the commits).

Held in its handler, a workflow keeps its agent (so K = N agents are needed for N waits)
and a task; parked, it keeps nothing in the process: its wake-up and steps are rows.
SQLite and PostgreSQL (skipped when unreachable).

Prints JSON (also benchmarks/results/parking.json) and a table on stderr.
Run: `uv run python benchmarks/parking.py [--quick] [--n N] [--pg-url URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from bench_db import PgUnreachable, migrated_pg_schema

from mas import Agent, Message, Runtime, Settings
from mas.config import WorkflowSettings
from mas.testing import eventually

RESULTS = Path(__file__).parent / "results" / "parking.json"
TIMEOUT = 600.0
WAIT = 3600.0  # far longer than the benchmark: nothing wakes while it measures


def prepare(i: int) -> int:
    return i


class Sleeper(Agent):
    """A durable step, then a long durable sleep; counts the handlers that reached it."""

    type = "sleeper"
    waiting = 0
    all_waiting: asyncio.Event
    target = 0

    async def handle_message(self, message: Message) -> Message | None:
        if message.type == "warm":
            return message.reply({})  # activated: its idempotency window read, before timing
        ctx = self.ctx
        await ctx.step("prepare", prepare, message.payload["i"])
        cls = type(self)
        cls.waiting += 1
        if cls.waiting == cls.target:
            cls.all_waiting.set()
        if message.payload.get("ask"):
            await ctx.ask("type:mute", Message("q", {}), timeout=WAIT)
        else:
            await ctx.sleep(WAIT)
        return None


class Mute(Agent):
    """Takes every question and answers none (the asks wait for ever)."""

    type = "mute"

    async def handle_message(self, message: Message) -> None:
        return None


def _heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


async def measure(settings: Settings, mode: str, n: int) -> dict[str, Any]:
    """Start `n` waits; what the process holds once they all wait."""
    parked, asks = mode != "held", mode == "parked-ask"
    # Held, each wait keeps its agent. An ask waits `park_after` before it parks: many
    # agents and a short one, or the run is spent waiting for that.
    agents = (500 if asks else 50) if parked else n
    Sleeper.waiting, Sleeper.target, Sleeper.all_waiting = 0, n, asyncio.Event()
    park_after = (0.05 if asks else 1.0) if parked else WAIT * 2
    settings = settings.model_copy(update={"workflow": WorkflowSettings(park_after=park_after)})
    async with Runtime(settings) as runtime:
        await runtime.spawn(Mute, id="mute")
        for a in range(agents):
            await runtime.spawn(Sleeper, id=f"sleeper-{a}")
            await runtime.ask(f"agent:sleeper-{a}", Message("warm", {}), timeout=TIMEOUT)
        tasks_before = len(asyncio.all_tasks())
        heap_before = _heap()
        start = time.perf_counter()
        for i in range(n):
            payload = {"i": i, "ask": asks}
            await runtime.tell(f"agent:sleeper-{i % agents}", Message("nap", payload))
        await asyncio.wait_for(Sleeper.all_waiting.wait(), TIMEOUT)
        if parked:
            # Every handler reached its sleep; wait until every one has parked.
            await eventually(lambda: runtime.stats()["parked"] >= n, timeout=TIMEOUT)
        journal = runtime.journal
        assert journal is not None
        await journal.flush()  # a timer's park is done once committed (with the batch)
        elapsed = time.perf_counter() - start
        heap = _heap() - heap_before
        tasks = len(asyncio.all_tasks()) - tasks_before
        # Held handlers are cancelled by the shutdown, after its timeout.
        return {
            "n": n,
            "agents": agents,
            "seconds": elapsed,
            "waits_per_s": n / elapsed,
            "heap_bytes_per_wait": heap / n,
            "tasks_per_wait": tasks / n,
        }


async def bench(name: str, settings: Settings, n: int) -> dict[str, Any]:
    result = {}
    for mode in ("parked", "parked-ask", "held"):
        print(f"[{name}] {mode} x{n} ...", file=sys.stderr)
        result[mode] = await measure(settings, mode, n)
    return result


async def main(args: argparse.Namespace) -> dict[str, Any]:
    n = args.n or (1_000 if args.quick else 10_000)
    base = {"log_level": "WARNING", "shutdown_timeout": 0.5, "persist": True}
    report: dict[str, Any] = {"n": n, "backends": {}}
    tracemalloc.start()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Settings(**base, database_url=f"sqlite+aiosqlite:///{tmp}/b.db")
        report["backends"]["sqlite"] = await bench("sqlite", sqlite, n)
    try:
        async with migrated_pg_schema(args.pg_url) as schema:
            pg = Settings(**base, database_url=args.pg_url, database_schema=schema)
            report["backends"]["postgresql"] = await bench("postgresql", pg, n)
    except PgUnreachable as exc:
        report["backends"]["postgresql"] = {"skipped": str(exc)}
    return report


def print_table(report: dict[str, Any]) -> None:
    print(
        f"\n{'backend':<12}{'mode':<12}{'waits/s':>10}{'heap B/wait':>14}{'tasks/wait':>12}",
        file=sys.stderr,
    )
    for name, result in report["backends"].items():
        if "skipped" in result:
            print(f"{name:<12} skipped: {result['skipped']}", file=sys.stderr)
            continue
        for mode, row in result.items():
            print(
                f"{name:<12}{mode:<12}{row['waits_per_s']:>10,.0f}"
                f"{row['heap_bytes_per_wait']:>14,.0f}{row['tasks_per_wait']:>12.2f}",
                file=sys.stderr,
            )
    print("(target: a parked wait holds no task and <= 2 KB)", file=sys.stderr)


if __name__ == "__main__":
    from mas.observability import configure_logging

    configure_logging("WARNING")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--n", type=int, default=0, help="waiting workflows (default 10,000)")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test")
    results = asyncio.run(main(parser.parse_args()))
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    print_table(results)
