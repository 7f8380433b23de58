"""Actor-runtime benchmarks: mas side by side with a minimal asyncio actor, pykka and thespian.

Run (from the repository root):

    uv run --group bench python benchmarks/actors.py [--quick] [--million] [--reps N]

Scenarios (full sizes; `--quick` divides them by 10 and runs 3 repetitions instead of 5):

    tell    one agent, 200k fire-and-forget messages, no-op handler
    ask     20k sequential request/reply round trips, echo handler (`message.reply(...)`)
    spawn   100k idle agents: time and memory per agent, 1M extrapolated (`--million` measures)
    fanout  1,000 agents subscribed to one topic, 100 publishes = 100k deliveries

Contenders: `mas` (memory transport); `minimal`, the least an asyncio actor can cost (an
`asyncio.Queue` mailbox and one task per actor); `pykka` (ThreadingActor, a thread per actor);
`thespian` (`simpleSystemBase`). Messages are built before the clock starts, every repetition
gets fresh ones, and a full garbage collection runs just before each timed section.

Each scenario runs every contender `reps` times, interleaved (the order rotates every
repetition) so that noise on a shared machine hits all of them; medians are reported, and the
table compares them as ratios, which survive noise better than absolute times. Memory is
measured in fresh subprocesses (`--probe`), one for RSS growth without tracemalloc and one
for the Python heap growth with tracemalloc, never in the timed runs.

JSON goes to stdout and to benchmarks/results/actors.json; progress, the table of ratios and the
target checks go to stderr. Nothing here asserts: the targets are informational.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib
import importlib.metadata
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mas import Agent, Message, Runtime, Settings

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "actors.json"
MAILBOX_CAPACITY = Settings().mailbox.capacity  # the minimal actor gets the same bound as mas
FANOUT_TOPIC = "bench.fanout"
ASK_TIMEOUT = 30.0
KIB = 1024
GIB = 1024**3


# -- sizes and results ---------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How many messages / agents each scenario uses (peers may use fewer per operation)."""

    tell: int = 200_000
    ask: int = 20_000
    spawn: int = 100_000
    spawn_pykka: int = 1_000  # a thread per actor: per-agent numbers from a smaller N
    fanout_agents: int = 1_000
    fanout_messages: int = 100

    def scaled(self, factor: int) -> Sizes:
        return Sizes(
            tell=self.tell // factor,
            ask=self.ask // factor,
            spawn=self.spawn // factor,
            spawn_pykka=self.spawn_pykka // factor,
            fanout_agents=self.fanout_agents // factor,
            fanout_messages=self.fanout_messages,
        )


@dataclass
class Sample:
    """One timed repetition of one contender."""

    seconds: float
    latencies: list[float] | None = None
    teardown: float | None = None


@dataclass
class Contender:
    """One implementation in a scenario: `trial()` runs one repetition of `n` operations."""

    name: str
    n: int
    trial: Callable[[], Sample] | None
    skipped: str | None = None
    samples: list[Sample] = field(default_factory=list)


# -- shared helpers ------------------------------------------------------------------------


def _messages(n: int, kind: str) -> list[Message]:
    """`n` distinct messages (mas deduplicates ids per agent, so ids must differ)."""
    return [Message(kind, {}) for _ in range(n)]


def _settle_gc() -> None:
    """Start every timed section from the same garbage-collector state."""
    gc.collect()


def _settings() -> Settings:
    return Settings(log_level="WARNING")


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of unsorted `values` (q in 0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Counter:
    """Counts handled messages and calls `done()` at `target`; shared by a trial's actors."""

    __slots__ = ("count", "done", "target")

    def __init__(self, target: int, done: Callable[[], None]) -> None:
        self.count = 0
        self.target = target
        self.done = done

    def hit(self) -> None:
        self.count += 1
        if self.count == self.target:
            self.done()


def _peer_missing(module: str) -> str | None:
    """Why a peer library cannot be benchmarked, or None when it imports."""
    try:
        importlib.import_module(module)
    except Exception as exc:
        return f"{module} failed to import: {exc!r}"
    return None


# -- mas -----------------------------------------------------------------------------------


class Sink(Agent):
    """Counts messages; the no-op handler of the tell scenario."""

    type = "bench_sink"

    def __init__(self, counter: Counter) -> None:
        self.counter = counter

    async def handle_message(self, message: Message) -> None:
        self.counter.hit()


class FanoutSink(Sink):
    """A `Sink` subscribed to the fan-out topic."""

    type = "bench_fanout"
    topics = (FANOUT_TOPIC,)


class Echo(Agent):
    """Answers every message with `message.reply(...)`."""

    type = "bench_echo"

    async def handle_message(self, message: Message) -> Message:
        return message.reply(message.payload)


class Idle(Agent):
    """Never receives anything: measures what an idle agent costs."""

    type = "bench_idle"

    async def handle_message(self, message: Message) -> None:
        return None


async def _mas_tell(n: int) -> Sample:
    messages = _messages(n, "ping")
    done = asyncio.Event()
    counter = Counter(n, done.set)
    async with Runtime(_settings()) as rt:
        ref = await rt.spawn(functools.partial(Sink, counter), id="sink")
        _settle_gc()
        start = time.perf_counter()
        for message in messages:
            await ref.tell(message)
        await done.wait()
        return Sample(time.perf_counter() - start)


async def _mas_ask(n: int) -> Sample:
    messages = _messages(n, "ask")
    async with Runtime(_settings()) as rt:
        ref = await rt.spawn(Echo, id="echo")
        _settle_gc()
        return await _timed_asks(messages, functools.partial(ref.ask, timeout=ASK_TIMEOUT))


async def _timed_asks(
    messages: list[Message], ask: Callable[[Message], Awaitable[Message]]
) -> Sample:
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    for message in messages:
        sent = clock()
        await ask(message)
        latencies.append(clock() - sent)
    return Sample(clock() - start, latencies)


async def _mas_spawn_all(rt: Runtime, n: int) -> Runtime:
    """Spawn `n` idle agents; their refs are dropped (the runtime's registry holds them)."""
    for i in range(n):
        await rt.spawn(Idle, id=f"idle-{i}")
    return rt


async def _mas_spawn(n: int) -> Sample:
    _settle_gc()
    async with Runtime(_settings()) as rt:
        start = time.perf_counter()
        await _mas_spawn_all(rt, n)
        elapsed = time.perf_counter() - start
        stopping = time.perf_counter()
    return Sample(elapsed, teardown=time.perf_counter() - stopping)


async def _mas_fanout(agents: int, count: int) -> Sample:
    messages = _messages(count, "news")
    done = asyncio.Event()
    counter = Counter(agents * count, done.set)
    async with Runtime(_settings()) as rt:
        for i in range(agents):
            await rt.spawn(functools.partial(FanoutSink, counter), id=f"fan-{i}")
        _settle_gc()
        start = time.perf_counter()
        for message in messages:
            await rt.publish(FANOUT_TOPIC, message)
        await done.wait()
        return Sample(time.perf_counter() - start)


# -- minimal asyncio actor -----------------------------------------------------------------

Handler = Callable[[Any], Awaitable[None]]


class MinimalActor:
    """The least an asyncio actor can cost: a bounded Queue mailbox and one task draining it."""

    __slots__ = ("queue", "task")

    def __init__(self, handler: Handler, capacity: int = MAILBOX_CAPACITY) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue(capacity)
        self.task = asyncio.get_running_loop().create_task(self._run(handler))

    async def _run(self, handler: Handler) -> None:
        queue = self.queue
        while True:
            message = await queue.get()
            await handler(message)

    async def tell(self, message: Any) -> None:
        await self.queue.put(message)

    async def ask(self, message: Message) -> Message:
        """Request/reply: the handler resolves the future that travels with the message."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        await self.queue.put((message, future))
        return await future


def _counting(counter: Counter) -> Handler:
    async def handle(message: Any) -> None:
        counter.hit()

    return handle


async def _echo(item: tuple[Message, asyncio.Future[Message]]) -> None:
    message, future = item
    future.set_result(message.reply(message.payload))


async def _idle(message: Any) -> None:
    return None


async def _stop_minimal(actors: list[MinimalActor]) -> None:
    for actor in actors:
        actor.task.cancel()
    await asyncio.gather(*(actor.task for actor in actors), return_exceptions=True)


async def _minimal_tell(n: int) -> Sample:
    messages = _messages(n, "ping")
    done = asyncio.Event()
    counter = Counter(n, done.set)
    actor = MinimalActor(_counting(counter))
    _settle_gc()
    start = time.perf_counter()
    for message in messages:
        await actor.tell(message)
    await done.wait()
    elapsed = time.perf_counter() - start
    await _stop_minimal([actor])
    return Sample(elapsed)


async def _minimal_ask(n: int) -> Sample:
    messages = _messages(n, "ask")
    actor = MinimalActor(_echo)
    _settle_gc()
    sample = await _timed_asks(messages, actor.ask)
    await _stop_minimal([actor])
    return sample


async def _minimal_spawn_all(n: int) -> dict[str, MinimalActor]:
    """`n` actors in a registry by id; returns once every task waits on its empty queue."""
    actors = {f"idle-{i}": MinimalActor(_idle) for i in range(n)}
    await asyncio.sleep(0)
    return actors


async def _minimal_spawn(n: int) -> Sample:
    _settle_gc()
    start = time.perf_counter()
    actors = await _minimal_spawn_all(n)
    elapsed = time.perf_counter() - start
    stopping = time.perf_counter()
    await _stop_minimal(list(actors.values()))
    return Sample(elapsed, teardown=time.perf_counter() - stopping)


async def _minimal_fanout(agents: int, count: int) -> Sample:
    messages = _messages(count, "news")
    done = asyncio.Event()
    counter = Counter(agents * count, done.set)
    actors = [MinimalActor(_counting(counter)) for _ in range(agents)]
    _settle_gc()
    start = time.perf_counter()
    for message in messages:
        for actor in actors:
            await actor.tell(message)
    await done.wait()
    elapsed = time.perf_counter() - start
    await _stop_minimal(actors)
    return Sample(elapsed)


# -- pykka (a thread per actor) ------------------------------------------------------------


def _pykka_tell(n: int) -> Sample:
    import pykka

    messages = _messages(n, "ping")
    done = threading.Event()
    counter = Counter(n, done.set)

    class PykkaSink(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> None:
            counter.hit()

    ref = PykkaSink.start()
    _settle_gc()
    start = time.perf_counter()
    for message in messages:
        ref.tell(message)
    done.wait()
    elapsed = time.perf_counter() - start
    ref.stop()
    return Sample(elapsed)


def _pykka_ask(n: int) -> Sample:
    import pykka

    class PykkaEcho(pykka.ThreadingActor):
        def on_receive(self, message: Message) -> Message:
            return message.reply(message.payload)

    messages = _messages(n, "ask")
    ref = PykkaEcho.start()
    _settle_gc()
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    for message in messages:
        sent = clock()
        ref.ask(message)
        latencies.append(clock() - sent)
    elapsed = clock() - start
    ref.stop()
    return Sample(elapsed, latencies)


def _pykka_idle_class() -> Any:
    import pykka

    class PykkaIdle(pykka.ThreadingActor):
        def on_receive(self, message: Any) -> None:
            return None

    return PykkaIdle


def _pykka_spawn_all(n: int) -> list[Any]:
    idle = _pykka_idle_class()
    return [idle.start() for _ in range(n)]


def _pykka_spawn(n: int) -> Sample:
    import pykka

    _settle_gc()
    start = time.perf_counter()
    _pykka_spawn_all(n)
    elapsed = time.perf_counter() - start
    stopping = time.perf_counter()
    pykka.ActorRegistry.stop_all()
    return Sample(elapsed, teardown=time.perf_counter() - stopping)


# -- thespian (simpleSystemBase: actors run in the caller's thread) -------------------------


def _thespian_classes() -> tuple[Any, Any]:
    from thespian.actors import Actor, ActorSystem

    class ThespianActor(Actor):  # type: ignore[misc]
        """Counts tells, answers "count" with the count, echoes asks with `reply(...)`."""

        def __init__(self) -> None:
            super().__init__()
            self.count = 0

        def receiveMessage(self, message: Any, sender: Any) -> None:  # noqa: N802  (thespian API)
            if message == "count":
                self.send(sender, self.count)
            elif isinstance(message, Message):
                if message.type == "ask":
                    self.send(sender, message.reply(message.payload))
                else:
                    self.count += 1

    return ActorSystem, ThespianActor


def _thespian_tell(n: int) -> Sample:
    actor_system, actor_class = _thespian_classes()
    messages = _messages(n, "ping")
    system = actor_system("simpleSystemBase")
    try:
        actor = system.createActor(actor_class)
        _settle_gc()
        start = time.perf_counter()
        for message in messages:
            system.tell(actor, message)
        handled = system.ask(actor, "count", ASK_TIMEOUT)  # returns once all tells are handled
        elapsed = time.perf_counter() - start
    finally:
        system.shutdown()
    if handled != n:
        raise RuntimeError(f"thespian handled {handled} of {n} tells")
    return Sample(elapsed)


def _thespian_ask(n: int) -> Sample:
    actor_system, actor_class = _thespian_classes()
    messages = _messages(n, "ask")
    system = actor_system("simpleSystemBase")
    try:
        actor = system.createActor(actor_class)
        _settle_gc()
        latencies: list[float] = []
        clock = time.perf_counter
        start = clock()
        for message in messages:
            sent = clock()
            system.ask(actor, message, ASK_TIMEOUT)
            latencies.append(clock() - sent)
        elapsed = clock() - start
    finally:
        system.shutdown()
    return Sample(elapsed, latencies)


# -- running scenarios ---------------------------------------------------------------------


def _in_loop(
    coro_fn: Callable[..., Coroutine[Any, Any, Sample]], *args: int
) -> Callable[[], Sample]:
    """A trial that runs `coro_fn(*args)` in a fresh event loop."""

    def trial() -> Sample:
        return asyncio.run(coro_fn(*args))

    return trial


def _peer(
    name: str, missing: dict[str, str | None], fn: Callable[[int], Sample], n: int
) -> Contender:
    reason = missing.get(name)
    if reason is not None:
        return Contender(name, n, None, skipped=reason)
    return Contender(name, n, functools.partial(fn, n))


def _run(scenario: str, contenders: list[Contender], reps: int) -> None:
    """Run every available contender `reps` times, rotating the order each repetition."""
    active = [c for c in contenders if c.trial is not None]
    for rep in range(reps):
        shift = rep % len(active)
        for contender in active[shift:] + active[:shift]:
            assert contender.trial is not None
            sample = contender.trial()
            contender.samples.append(sample)
            per_op = sample.seconds / contender.n * 1e6
            _say(f"  {scenario:<7} rep {rep + 1}/{reps} {contender.name:<9} {per_op:9.2f} µs/op")


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _timing(contender: Contender) -> dict[str, Any]:
    if contender.skipped is not None:
        return {"skipped": contender.skipped}
    runs = [s.seconds for s in contender.samples]
    median = statistics.median(runs)
    result: dict[str, Any] = {
        "n": contender.n,
        "median_s": median,
        "us_per_op": median / contender.n * 1e6,
        "ops_per_s": contender.n / median,
        "runs_s": runs,
    }
    if contender.samples[0].latencies is not None:
        result["p50_us"] = statistics.median(
            _percentile(s.latencies or [], 0.50) * 1e6 for s in contender.samples
        )
        result["p99_us"] = statistics.median(
            _percentile(s.latencies or [], 0.99) * 1e6 for s in contender.samples
        )
    if contender.samples[0].teardown is not None:
        teardown = statistics.median(s.teardown or 0.0 for s in contender.samples)
        result["teardown_us_per_op"] = teardown / contender.n * 1e6
    return result


def _scenario(
    description: str, contenders: list[Contender], reps: int, name: str
) -> dict[str, Any]:
    _say(f"{name}: {description}")
    _run(name, contenders, reps)
    results = {c.name: _timing(c) for c in contenders}
    return {"description": description, "reps": reps, "results": results}


def tell_scenario(sizes: Sizes, reps: int, missing: dict[str, str | None]) -> dict[str, Any]:
    n = sizes.tell
    contenders = [
        Contender("mas", n, _in_loop(_mas_tell, n)),
        Contender("minimal", n, _in_loop(_minimal_tell, n)),
        _peer("pykka", missing, _pykka_tell, n),
        _peer("thespian", missing, _thespian_tell, n),
    ]
    return _scenario(f"one agent, {n} tells, no-op handler", contenders, reps, "tell")


def ask_scenario(sizes: Sizes, reps: int, missing: dict[str, str | None]) -> dict[str, Any]:
    n = sizes.ask
    contenders = [
        Contender("mas", n, _in_loop(_mas_ask, n)),
        Contender("minimal", n, _in_loop(_minimal_ask, n)),
        _peer("pykka", missing, _pykka_ask, n),
        _peer("thespian", missing, _thespian_ask, n),
    ]
    return _scenario(f"{n} sequential asks, echo handler", contenders, reps, "ask")


def spawn_scenario(
    sizes: Sizes, reps: int, missing: dict[str, str | None], million: bool
) -> dict[str, Any]:
    n = sizes.spawn
    contenders = [
        Contender("mas", n, _in_loop(_mas_spawn, n)),
        Contender("minimal", n, _in_loop(_minimal_spawn, n)),
        _peer("pykka", missing, _pykka_spawn, sizes.spawn_pykka),
    ]
    description = f"{n} idle agents (pykka: {sizes.spawn_pykka}, a thread each)"
    report = _scenario(description, contenders, reps, "spawn")
    for contender in contenders:
        if contender.skipped is None:
            memory = _probe_memory(contender.name, contender.n)
            report["results"][contender.name]["memory"] = memory
    report["extrapolated_1m_bytes"] = {
        kind: (per_agent * 1_000_000 if per_agent is not None else None)
        for kind, per_agent in (
            ("traced", _value(report, "mas", "memory", "traced_bytes_per_agent")),
            ("rss", _value(report, "mas", "memory", "rss_bytes_per_agent")),
        )
    }
    if million:
        _say("spawn: measuring 1,000,000 mas agents (RSS only)")
        report["measured_1m"] = _probe_memory("mas", 1_000_000, rss_only=True)
    return report


def fanout_scenario(sizes: Sizes, reps: int) -> dict[str, Any]:
    agents, count = sizes.fanout_agents, sizes.fanout_messages
    n = agents * count
    contenders = [
        Contender("mas", n, _in_loop(_mas_fanout, agents, count)),
        Contender("minimal", n, _in_loop(_minimal_fanout, agents, count)),
    ]
    description = f"{agents} subscribers x {count} publishes = {n} deliveries"
    return _scenario(description, contenders, reps, "fanout")


# -- memory probes (fresh subprocesses) ----------------------------------------------------


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _async_probe(impl: str, n: int, traced: bool) -> dict[str, Any]:
    if impl == "mas":
        async with Runtime(_settings()) as rt:
            return await _measure(impl, n, traced, lambda: _mas_spawn_all(rt, n))
    return await _measure(impl, n, traced, lambda: _minimal_spawn_all(n))


async def _measure(
    impl: str, n: int, traced: bool, spawn: Callable[[], Awaitable[object]]
) -> dict[str, Any]:
    """Memory growth over spawning `n` agents: RSS, or the Python heap when `traced`."""
    gc.collect()
    if traced:
        tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0] if traced else _rss_bytes()
    start = time.perf_counter()
    agents = await spawn()
    seconds = time.perf_counter() - start
    gc.collect()
    grown = (tracemalloc.get_traced_memory()[0] if traced else _rss_bytes()) - before
    tracemalloc.stop()
    del agents
    kind = "traced" if traced else "rss"
    return {
        "n": n,
        f"{kind}_bytes": grown,
        f"{kind}_bytes_per_agent": grown / n,
        "seconds": seconds,
    }


def _sync_probe(impl: str, n: int, traced: bool) -> dict[str, Any]:
    import pykka

    async def spawn() -> object:
        return _pykka_spawn_all(n)

    try:
        return asyncio.run(_measure(impl, n, traced, spawn))
    finally:
        pykka.ActorRegistry.stop_all()


def probe(impl: str, n: int, traced: bool) -> dict[str, Any]:
    """Measure what `n` idle agents of `impl` cost (run inside a fresh process)."""
    if impl == "pykka":
        return _sync_probe(impl, n, traced)
    return asyncio.run(_async_probe(impl, n, traced))


def _run_probe(impl: str, n: int, traced: bool) -> dict[str, Any]:
    kind = "tracemalloc" if traced else "RSS"
    _say(f"  spawn   memory probe: {impl}, {n} agents, {kind} (fresh process)")
    command = [sys.executable, str(Path(__file__).resolve()), "--probe", impl, "--n", str(n)]
    if traced:
        command.append("--traced")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-2000:]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _probe_memory(impl: str, n: int, *, rss_only: bool = False) -> dict[str, Any]:
    """RSS growth (no tracemalloc) and heap growth (tracemalloc), each in a fresh process."""
    rss = _run_probe(impl, n, traced=False)
    memory = {"n": n, "spawn_seconds": rss.pop("seconds", None), **rss}
    if not rss_only:
        heap = _run_probe(impl, n, traced=True)
        heap.pop("seconds", None)
        memory.update(heap)
    return memory


# -- ratios, targets and the report --------------------------------------------------------


def _ratio(scenario: dict[str, Any] | None, other: str, key: str = "us_per_op") -> float | None:
    """How many times better mas is than `other` on `key` (lower is better): >1 = mas wins."""
    mine, theirs = _value(scenario, "mas", key), _value(scenario, other, key)
    return theirs / mine if mine and theirs is not None else None


def add_ratios(report: dict[str, Any]) -> None:
    for scenario in report["scenarios"].values():
        ratios: dict[str, float | None] = {}
        for other in scenario["results"]:
            if other == "mas":
                continue
            ratios[f"mas_speedup_vs_{other}"] = _ratio(scenario, other)
            if "p99_us" in scenario["results"]["mas"]:
                ratios[f"mas_p99_advantage_vs_{other}"] = _ratio(scenario, other, "p99_us")
        scenario["ratios"] = ratios


def _target(
    name: str, value: float | None, limit: float, at_least: bool, ceiling: float | None = None
) -> dict[str, Any]:
    """One check; `ceiling` is what the minimal actor scores on the same ratio (for context)."""
    passed = None if value is None else (value >= limit if at_least else value <= limit)
    target = {"name": name, "value": value, "limit": limit, "passed": passed}
    if ceiling is not None:
        target["minimal_actor_scores"] = ceiling
    return target


def _minimal_vs(scenario: dict[str, Any] | None, other: str) -> float | None:
    """How many times faster the minimal actor is than `other`: the best mas could do."""
    mine, theirs = _value(scenario, "minimal", "us_per_op"), _value(scenario, other, "us_per_op")
    return theirs / mine if mine and theirs is not None else None


def _value(scenario: dict[str, Any] | None, contender: str, *keys: str) -> float | None:
    """A nested result value, or None when the scenario, contender or key is missing."""
    node: Any = (scenario or {}).get("results", {}).get(contender, {})
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, int | float) else None


def _p99_ratio(ask: dict[str, Any] | None) -> float | None:
    mine, theirs = _value(ask, "mas", "p99_us"), _value(ask, "minimal", "p99_us")
    return mine / theirs if mine is not None and theirs else None


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The informational pass/fail checks (None: not measured in this run)."""
    s = report["scenarios"]
    tell, ask, spawn = s.get("tell"), s.get("ask"), s.get("spawn")
    heap = _value(spawn, "mas", "memory", "traced_bytes_per_agent")
    return [
        _target("tell throughput: mas / minimal >= 0.5", _ratio(tell, "minimal"), 0.5, True),
        _target(
            "tell throughput: mas / pykka >= 3",
            _ratio(tell, "pykka"),
            3.0,
            True,
            _minimal_vs(tell, "pykka"),
        ),
        _target("ask throughput: mas / minimal >= 0.5", _ratio(ask, "minimal"), 0.5, True),
        _target("ask p99: mas p99 / minimal p99 <= 2", _p99_ratio(ask), 2.0, False),
        _target(
            "ask throughput: mas / pykka >= 4",
            _ratio(ask, "pykka"),
            4.0,
            True,
            _minimal_vs(ask, "pykka"),
        ),
        _target("idle agent heap bytes (tracemalloc) <= 1.5 KiB", heap, 1.5 * KIB, False),
        _target("idle agent spawn µs <= 15", _value(spawn, "mas", "us_per_op"), 15.0, False),
        _target(
            "1M idle agents (extrapolated from tracemalloc) < 2 GiB",
            heap * 1_000_000 / GIB if heap is not None else None,
            2.0,
            False,
        ),
    ]


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 1e6:
            return f"{value / 1e6:.2f}M"
        if abs(value) >= 1e4:
            return f"{value / 1e3:.0f}k"
        if abs(value) >= 1e3:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  "
        + "  ".join(
            cell.rjust(w) if i else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    )


def _scenario_rows(name: str, scenario: dict[str, Any]) -> list[list[str]]:
    latency = name == "ask"
    spawn = name == "spawn"
    header = ["contender", "n", "µs/op", "ops/s", "mas speedup"]
    if latency:
        header += ["p50 µs", "p99 µs", "mas p99 adv."]
    if spawn:
        header += ["heap B/agent", "RSS B/agent", "mas mem adv.", "stop µs/op"]
    rows = [header]
    mas_memory = scenario["results"]["mas"].get("memory", {})
    for contender, result in scenario["results"].items():
        if "skipped" in result:
            rows.append([contender, "skipped", result["skipped"][:40]] + [""] * (len(header) - 3))
            continue
        row = [
            contender,
            str(result["n"]),
            _fmt(result["us_per_op"]),
            _fmt(result["ops_per_s"]),
            _fmt(_ratio(scenario, contender)) + "x",
        ]
        if latency:
            p99_ratio = _ratio(scenario, contender, "p99_us")
            row += [_fmt(result["p50_us"]), _fmt(result["p99_us"]), _fmt(p99_ratio) + "x"]
        if spawn:
            memory = result.get("memory", {})
            heap = memory.get("traced_bytes_per_agent")
            mas_heap = mas_memory.get("traced_bytes_per_agent")
            advantage = heap / mas_heap if heap and mas_heap else None
            row += [
                _fmt(heap, 0),
                _fmt(memory.get("rss_bytes_per_agent"), 0),
                _fmt(advantage) + "x",
                _fmt(result.get("teardown_us_per_op")),
            ]
        rows.append(row)
    return rows


def _gib(value: Any) -> str:
    return _fmt(value / GIB) if isinstance(value, int | float) else "-"


def _million_lines(spawn: dict[str, Any]) -> list[str]:
    extrapolated = spawn.get("extrapolated_1m_bytes", {})
    lines = [
        f"  1M idle mas agents, extrapolated: {_gib(extrapolated.get('traced'))} GiB heap, "
        f"{_gib(extrapolated.get('rss'))} GiB RSS"
    ]
    if "measured_1m" in spawn:
        measured = spawn["measured_1m"]
        lines.append(
            f"  1M idle mas agents, measured: {_gib(measured.get('rss_bytes'))} GiB RSS, "
            f"{_fmt(measured.get('spawn_seconds'))} s to spawn"
        )
    return lines


def render(report: dict[str, Any]) -> str:
    lines = [
        "Medians; 'mas speedup' = other's time per op / mas's time per op (> 1: mas is faster);",
        "'adv.' columns likewise for p99 latency and heap bytes (> 1: mas is better).",
    ]
    for name, scenario in report["scenarios"].items():
        lines += ["", f"{name}: {scenario['description']} (median of {scenario['reps']})"]
        lines.append(_grid(_scenario_rows(name, scenario)))
    if "spawn" in report["scenarios"]:
        lines += _million_lines(report["scenarios"]["spawn"])
    lines += ["", "targets (informational):"]
    for target in report["targets"]:
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[target["passed"]]
        line = f"  {verdict}  {target['name']}  (measured {_fmt(target['value'])}"
        if "minimal_actor_scores" in target:
            line += f"; the minimal actor scores {_fmt(target['minimal_actor_scores'])}"
        lines.append(line + ")")
    return "\n".join(lines)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    """The commit benchmarked, with `-dirty` when mas/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        command = ["git", *args]
        return subprocess.run(command, cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--", "mas").strip())
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def _meta(args: argparse.Namespace, sizes: Sizes, reps: int) -> dict[str, Any]:
    return {
        "git": _git(),
        "started_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "reps": reps,
        "sizes": sizes.__dict__,
        "mailbox_capacity": MAILBOX_CAPACITY,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "versions": {
            name: _version(name) for name in ("mas-runtime", "pykka", "thespian", "structlog")
        },
    }


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes().scaled(10) if args.quick else Sizes()
    reps = args.reps or (3 if args.quick else 5)
    missing = {name: _peer_missing(name) for name in ("pykka", "thespian")}
    report: dict[str, Any] = {"meta": _meta(args, sizes, reps)}
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "tell": lambda: tell_scenario(sizes, reps, missing),
        "ask": lambda: ask_scenario(sizes, reps, missing),
        "spawn": lambda: spawn_scenario(sizes, reps, missing, args.million),
        "fanout": lambda: fanout_scenario(sizes, reps),
    }
    chosen = args.only.split(",") if args.only else list(runners)
    unknown = set(chosen) - set(runners)
    if unknown:
        raise SystemExit(f"--only: unknown scenario(s) {sorted(unknown)}; use {list(runners)}")
    report["scenarios"] = {name: runners[name]() for name in runners if name in chosen}
    report["meta"]["loadavg_at_end"] = os.getloadavg()
    add_ratios(report)
    report["targets"] = targets(report)
    return report


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes / 10, 3 repetitions")
    parser.add_argument("--reps", type=int, default=0, help="repetitions per contender")
    parser.add_argument("--million", action="store_true", help="also spawn 1M mas agents")
    parser.add_argument("--only", default="", help="comma-separated: tell,ask,spawn,fanout")
    parser.add_argument("--probe", choices=("mas", "minimal", "pykka"), help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.n, args.traced)))
        return
    report = run_all(args)
    text = json.dumps(report, indent=2)
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(text + "\n")
    print(text)
    _say("\n" + render(report) + f"\n\nJSON written to {RESULTS_FILE}")


if __name__ == "__main__":
    # A runtime leaves logging to its host (as `mas up|worker` do): warnings only, as before.
    from mas.observability import configure_logging

    configure_logging("WARNING")
    main()
