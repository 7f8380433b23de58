"""Persistence benchmarks: what recording agents, tasks and messages costs the runtime.

In one run, on SQLite (WAL, a temporary file) and on PostgreSQL (a temporary schema):
- runtime tell throughput with MAS_AUDIT=off vs all (and, for scale, without persistence);
- task create + complete throughput (Store.create_task, then an echo agent completes it);
- the ceiling: raw SQLAlchemy Core batched inserts (1,000 rows per statement and transaction)
  of the same audit rows the runtime writes.

Prints JSON (also written to benchmarks/results/persistence.json) and a table of ratios.
Run: `uv run python benchmarks/persistence.py [--quick] [--pg-url URL]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite

from agents.echo import EchoAgent
from mas import Agent, HandlerResult, MasError, Message, Runtime, Settings
from mas.persistence import Store, StoreJournal
from mas.persistence.engine import connect
from mas.persistence.store import message_row, messages

RESULTS = Path(__file__).parent / "results" / "persistence.json"


class Sink(Agent):
    type = "sink"

    async def handle_message(self, message: Message) -> HandlerResult:
        return None


def payload(i: int) -> dict[str, Any]:
    return {"i": i, "text": "hello world", "tags": ["a", "b"]}


async def tell_throughput(store: Store | None, audit: str, n: int) -> float:
    """Messages per second through one agent, until handled and (if persisting) committed."""
    journal = StoreJournal(store, audit=audit) if store is not None else None  # type: ignore[arg-type]
    async with Runtime(Settings(log_level="WARNING"), journal=journal) as rt:
        ref = await rt.spawn(Sink, id=f"sink-{uuid.uuid4().hex[:8]}")
        batch = [Message("ping", payload(i)) for i in range(n)]
        started = time.perf_counter()
        for message in batch:
            await ref.tell(message)
        await rt.settle(timeout=300)
        return n / (time.perf_counter() - started)


async def task_throughput(store: Store, n: int) -> float:
    """Tasks per second: create (one transaction each, as the API does) and complete."""
    async with Runtime(Settings(log_level="WARNING"), journal=StoreJournal(store)) as rt:
        ref = await rt.spawn(EchoAgent, id=f"echo-{uuid.uuid4().hex[:8]}")
        started = time.perf_counter()
        for i in range(n):
            task_id = str(uuid.uuid4())
            await store.create_task(task_id, "echo", payload(i))
            await ref.tell(Message("echo", payload(i), metadata={"task_id": task_id}))
        await rt.settle(timeout=300)
        return n / (time.perf_counter() - started)


async def core_ceiling(store: Store, n: int) -> float:
    """Messages per second the raw Core batched insert of the audit's rows allows.

    With MAS_AUDIT=all a handled message is one `messages` row naming its handler (it is
    also the idempotency record), so that is the row inserted here.
    """
    insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
    handler = f"x-{uuid.uuid4().hex[:6]}"
    rows = [
        message_row(Message("ping", payload(i), target=f"agent:{handler}"), handler)
        for i in range(n)
    ]
    started = time.perf_counter()
    for start in range(0, n, 1000):
        async with store.engine.begin() as conn:
            await conn.execute(
                insert(messages).on_conflict_do_nothing(), rows[start : start + 1000]
            )
    return n / (time.perf_counter() - started)


async def median(reps: int, measure: Callable[[], Awaitable[float]]) -> dict[str, Any]:
    runs = [await measure() for _ in range(reps)]
    return {"median_per_s": statistics.median(runs), "runs_per_s": runs}


async def bench_backend(name: str, store: Store, n: int, reps: int) -> dict[str, Any]:
    print(f"[{name}] tell throughput, audit off/all/none ...", file=sys.stderr)
    result: dict[str, Any] = {
        "audit_off": await median(reps, lambda: tell_throughput(store, "off", n)),
        "audit_all": await median(reps, lambda: tell_throughput(store, "all", n)),
        "no_persistence": await median(reps, lambda: tell_throughput(None, "off", n)),
    }
    print(f"[{name}] core ceiling and tasks ...", file=sys.stderr)
    result["core_ceiling"] = await median(reps, lambda: core_ceiling(store, n))
    result["tasks"] = await median(reps, lambda: task_throughput(store, max(n // 10, 100)))
    per_s = {key: value["median_per_s"] for key, value in result.items()}
    result["ratios"] = {
        "audit_all_vs_off": per_s["audit_all"] / per_s["audit_off"],
        "audit_all_vs_core_ceiling": per_s["audit_all"] / per_s["core_ceiling"],
    }
    return result


async def open_pg(url: str) -> tuple[Store, str] | None:
    schema = f"mas_bench_{uuid.uuid4().hex[:8]}"
    try:
        engine = await connect(url)
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await engine.dispose()
        return await Store.open(url, schema=schema, migrate=True), schema
    except MasError as exc:  # a missing server is reported, not fatal
        print(f"[postgresql] skipped: {exc}", file=sys.stderr)
        return None


async def drop_pg_schema(url: str, schema: str) -> None:
    engine = await connect(url)
    async with engine.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await engine.dispose()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    n, reps = (2_000, 2) if args.quick else (20_000, 3)
    report: dict[str, Any] = {"n": n, "reps": reps, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        store = await Store.open(f"sqlite+aiosqlite:///{tmp}/bench.db", migrate=True)
        try:
            report["backends"]["sqlite"] = await bench_backend("sqlite", store, n, reps)
        finally:
            await store.close()
    opened = await open_pg(args.pg_url)
    if opened is None:
        report["backends"]["postgresql"] = {"skipped": "PostgreSQL unreachable"}
    else:
        store, schema = opened
        try:
            report["backends"]["postgresql"] = await bench_backend("postgresql", store, n, reps)
        finally:
            await store.close()
            await drop_pg_schema(args.pg_url, schema)
    return report


COLUMNS = ("audit_off", "audit_all", "no_persistence", "core_ceiling", "tasks")


def print_table(report: dict[str, Any]) -> None:
    header = "".join(f"{c + '/s':>18}" for c in COLUMNS)
    print(f"\n{'backend':<11}{header}{'all/off':>9}{'all/ceiling':>13}", file=sys.stderr)
    for name, result in report["backends"].items():
        if "skipped" in result:
            print(f"{name:<11} skipped: {result['skipped']}", file=sys.stderr)
            continue
        cells = "".join(f"{result[c]['median_per_s']:>18,.0f}" for c in COLUMNS)
        ratios = result["ratios"]
        print(
            f"{name:<11}{cells}{ratios['audit_all_vs_off']:>9.2f}"
            f"{ratios['audit_all_vs_core_ceiling']:>13.2f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    # A runtime leaves logging to its host (as `mas up|worker` do): warnings only, as before.
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
