"""Distributed benchmarks: mas over RabbitMQ against raw aio-pika and bare taskiq, in one run.

Run (from the repository root, with RabbitMQ on 127.0.0.1:5672, guest/guest):

    uv run python benchmarks/distributed.py [--quick] [--reps N]

Scenarios (full sizes; `--quick` uses about a tenth and 2 repetitions instead of 3):

    noio   10k messages through a durable quorum queue, handler returns at once:
           raw_aio_pika, bare_taskiq, mas_1_worker_noio, mas_2_workers_noio, and its variants
           mas_2_workers_noio_traced (every mas process exports OpenTelemetry spans),
           mas_2_workers_noio_traced_noop (every mas process makes spans with the SDK, and a
           no-op exporter drops them) and mas_2_workers_noio_metrics (the workers serve
           /metrics, so they time every handler)
    io     3k messages to agents whose handler awaits 50 ms (16 agents per worker):
           mas_1_worker, mas_2_workers
    ask    1.5k sequential cross-process request/reply round trips:
           mas_ask, raw_aio_pika_rpc
    fanout one workflow on worker 1 asks 1k children, served by worker 2, at once:
           mas_fanout_durable (ctx.gather of ctx.ask), mas_fanout_plain (asyncio.gather of
           runtime.ask); the workers run without persistence

Every contender publishes the same ~200-byte JSON payload, persistent, with publisher confirms,
concurrently in chunks of `WINDOW` (asyncio.gather), and acknowledges after handling. Throughput
is timed from the first publish to the moment the last message was handled (the handler's
`time.monotonic()`, which every process on the machine shares). mas work runs in real
`mas worker` subprocesses; the benchmark process hosts a collector agent that receives the
workers' progress reports (see bench_agents.py). Every run uses its own name prefix and deletes
its queues and exchanges at the end.

A variant of mas_2_workers_noio runs in two workers of its own, under a prefix of its own, sent
to by a runtime of its own in the benchmark process, so that the plain contenders never share a
process with it. Traced, the workers get `OTEL_EXPORTER_OTLP_ENDPOINT` (a sink in the benchmark
process that answers every export with 200 and drops the spans, so that no collector's work is
timed) and `OTEL_BSP_SCHEDULE_DELAY=500`, and the sending runtime exports its spans there too,
as a gateway would. Traced with a no-op exporter, the workers run `mas` through
bench_noop_tracing.py and the sending runtime drops its spans too: what tracing costs mas and the
SDK, without an exporter's encoding and posting. With metrics, the workers run with
`--metrics-port 0` (nothing scrapes).

Repetitions are interleaved (the order rotates every repetition) and medians are reported.
JSON goes to stdout and to benchmarks/results/distributed.json; progress and the table of
ratios go to stderr. Nothing here asserts: the targets are informational.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import importlib.metadata
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika import DeliveryMode
from aio_pika.abc import AbstractIncomingMessage
from aio_pika.exceptions import AMQPError

from mas import Agent, Message, Runtime, Settings
from mas.config import AmqpSettings
from mas.observability import tracing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS_FILE = HERE / "results" / "distributed.json"
AMQP_URL = os.environ.get("MAS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
WINDOW = 100  # publishes in flight (awaiting their confirm) at once, for every contender
PREFETCH = 256  # unacknowledged deliveries per consumer, for every contender (mas: default)
INSTANCES = 16  # agents of each type in each mas worker
PUBLISH_TIMEOUT = 10.0
MAS_EXCHANGES = ("agents.direct", "agents.topic", "agents.delay", "agents.dlx")
W1_AGENTS = ("IoSolo", "IoPair", "NoIoSolo", "NoIoPair", "BenchEcho", "BenchFanOut")
W2_AGENTS = ("IoPair", "NoIoPair", "BenchChild")
SPAN_DELAY_MS = 500  # OTEL_BSP_SCHEDULE_DELAY of every traced process (the SDK's default: 5000)


@dataclass(frozen=True)
class Sizes:
    noio: int = 10_000
    io: int = 3_000
    ask: int = 1_500
    fanout: int = 1_000


@dataclass
class Contender:
    name: str
    n: int
    trial: Callable[[], Awaitable[dict[str, Any]]]
    samples: list[dict[str, Any]] = field(default_factory=list)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _payload(run: str, seq: int) -> dict[str, Any]:
    """~200 bytes of JSON (the same payload for every contender)."""
    return {"run": run, "seq": seq, "kind": "bench", "data": "x" * 130}


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _publish_windowed(calls: list[Callable[[], Awaitable[Any]]]) -> None:
    for i in range(0, len(calls), WINDOW):
        await asyncio.gather(*(call() for call in calls[i : i + WINDOW]))


# -- raw aio-pika --------------------------------------------------------------------------


def _raw_message(body: bytes, **extra: Any) -> aio_pika.Message:
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=DeliveryMode.PERSISTENT,
        message_id=uuid.uuid4().hex,
        **extra,
    )


async def raw_trial(prefix: str, n: int) -> dict[str, Any]:
    """Publish n messages with confirms to a quorum queue and consume them, one connection."""
    name = f"{prefix}raw.work"
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        consume = await connection.channel(publisher_confirms=False)
        await consume.set_qos(prefetch_count=PREFETCH)
        arguments = {"x-queue-type": "quorum"}
        await publish.declare_queue(name, durable=True, arguments=arguments)
        queue = await consume.declare_queue(name, durable=True, arguments=arguments)
        run = uuid.uuid4().hex[:8]
        bodies = [json.dumps(_payload(run, i)).encode() for i in range(n)]
        done = asyncio.Event()
        state = {"count": 0, "last": 0.0}

        async def on_message(incoming: AbstractIncomingMessage) -> None:
            json.loads(incoming.body)  # the same decoding work every contender does
            state["count"] += 1
            state["last"] = time.monotonic()
            await incoming.ack()
            if state["count"] >= n:
                done.set()

        tag = await queue.consume(on_message)
        exchange = publish.default_exchange
        calls = [
            functools.partial(
                exchange.publish,
                _raw_message(body),
                name,
                mandatory=True,
                timeout=PUBLISH_TIMEOUT,
            )
            for body in bodies
        ]
        gc.collect()
        start = time.monotonic()
        await _publish_windowed(calls)
        await asyncio.wait_for(done.wait(), timeout=120)
        await queue.cancel(tag)
        return {"seconds": state["last"] - start, "body_bytes": len(bodies[0])}


# -- bare taskiq ---------------------------------------------------------------------------


async def taskiq_trial(prefix: str, n: int) -> dict[str, Any]:
    """taskiq-aio-pika with a JSON serializer: n `kiq`s, drained by an in-process Receiver."""
    from taskiq.receiver import Receiver
    from taskiq.serializers import JSONSerializer
    from taskiq_aio_pika import AioPikaBroker
    from taskiq_aio_pika.exchange import Exchange
    from taskiq_aio_pika.queue import Queue

    class Broker(AioPikaBroker):
        body_bytes = 0

        async def kick(self, message: Any) -> None:
            self.body_bytes = len(message.message)
            await super().kick(message)

    broker = Broker(
        AMQP_URL,
        qos=PREFETCH,
        exchange=Exchange(name=f"{prefix}taskiq"),
        task_queues=[Queue(name=f"{prefix}taskiq")],
        dead_letter_queue=Queue(name=f"{prefix}taskiq.dead_letter"),
    ).with_serializer(JSONSerializer())
    done = asyncio.Event()
    state = {"count": 0, "last": 0.0}

    async def work(payload: dict[str, Any]) -> None:
        state["count"] += 1
        state["last"] = time.monotonic()
        if state["count"] >= n:
            done.set()

    task = broker.register_task(work, task_name="bench_work")
    broker.is_worker_process = True
    await broker.startup()
    receiver = Receiver(broker, run_startup=False, max_async_tasks=PREFETCH)
    finish = asyncio.Event()
    listening = asyncio.get_running_loop().create_task(receiver.listen(finish))
    try:
        run = uuid.uuid4().hex[:8]
        payloads = [_payload(run, i) for i in range(n)]
        calls = [functools.partial(task.kiq, payload) for payload in payloads]
        gc.collect()
        start = time.monotonic()
        await _publish_windowed(calls)
        await asyncio.wait_for(done.wait(), timeout=120)
        return {"seconds": state["last"] - start, "body_bytes": broker.body_bytes}
    finally:
        finish.set()
        try:
            await asyncio.wait_for(listening, timeout=10)
        except (TimeoutError, asyncio.CancelledError):
            listening.cancel()
        await broker.shutdown()


# -- mas -----------------------------------------------------------------------------------


class Progress:
    """What the workers' agents reported, per run: {agent: (count, last handled at)}."""

    def __init__(self) -> None:
        self.reports: dict[str, dict[str, tuple[int, float]]] = {}
        self.expected: dict[str, tuple[int, asyncio.Event]] = {}

    def expect(self, run: str, n: int) -> asyncio.Event:
        event = asyncio.Event()
        self.expected[run] = (n, event)
        self.reports[run] = {}
        return event

    def report(self, payload: dict[str, Any]) -> None:
        run = payload["run"]
        if run not in self.expected:
            return
        agents = self.reports[run]
        previous = agents.get(payload["agent"], (0, 0.0))
        if payload["count"] >= previous[0]:
            agents[payload["agent"]] = (payload["count"], payload["last"])
        n, event = self.expected[run]
        if sum(count for count, _ in agents.values()) >= n:
            event.set()

    def handled(self, run: str) -> int:
        return sum(count for count, _ in self.reports.get(run, {}).values())

    def last(self, run: str) -> float:
        return max(last for _, last in self.reports[run].values())


class Collector(Agent):
    """Receives the workers' progress reports (see bench_agents.py)."""

    type = "bench_collector"

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    async def handle_message(self, message: Message) -> None:
        self.progress.report(message.payload)


async def mas_trial(rt: Runtime, progress: Progress, agent_type: str, n: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    messages = [Message("bench.work", _payload(run, i)) for i in range(n)]
    body_bytes = len(messages[0].evolve(target=f"type:{agent_type}").to_json())
    event = progress.expect(run, n)
    target = f"type:{agent_type}"
    calls = [functools.partial(rt.tell, target, message) for message in messages]
    gc.collect()
    start = time.monotonic()
    await _publish_windowed(calls)
    try:
        await asyncio.wait_for(event.wait(), timeout=300)
    except TimeoutError:
        raise RuntimeError(
            f"{agent_type}: only {progress.handled(run)}/{n} reported handled"
        ) from None
    return {"seconds": progress.last(run) - start, "body_bytes": body_bytes}


async def timed_asks(ask: Callable[[int], Awaitable[Any]], n: int) -> dict[str, Any]:
    for i in range(20):  # warm-up, untimed
        await ask(-1 - i)
    gc.collect()
    latencies: list[float] = []
    clock = time.perf_counter
    start = clock()
    for i in range(n):
        sent = clock()
        await ask(i)
        latencies.append(clock() - sent)
    return {"seconds": clock() - start, "latencies": latencies}


async def mas_ask_trial(rt: Runtime, n: int) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]

    async def ask(i: int) -> Message:
        return await rt.ask("type:bench_echo", Message("bench.ask", _payload(run, i)), timeout=10)

    return await timed_asks(ask, n)


async def raw_rpc_trial(prefix: str, n: int) -> dict[str, Any]:
    """The same round trip with aio-pika: request queue, exclusive reply queue, correlation id."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        consume = await connection.channel(publisher_confirms=False)
        await consume.set_qos(prefetch_count=PREFETCH)
        replies = await consume.declare_queue(
            f"{prefix}raw.replies.{uuid.uuid4().hex[:8]}", exclusive=True
        )
        pending: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(incoming: AbstractIncomingMessage) -> None:
            await incoming.ack()
            future = pending.pop(incoming.correlation_id or "", None)
            if future is not None and not future.done():
                future.set_result(incoming.body)

        await replies.consume(on_reply)
        run = uuid.uuid4().hex[:8]
        loop = asyncio.get_running_loop()
        exchange = publish.default_exchange
        request_queue = f"{prefix}raw.rpc"

        async def ask(i: int) -> dict[str, Any]:
            message = _raw_message(json.dumps(_payload(run, i)).encode(), reply_to=replies.name)
            future: asyncio.Future[bytes] = loop.create_future()
            pending[message.message_id or ""] = future
            message.correlation_id = message.message_id
            await exchange.publish(message, request_queue, mandatory=True, timeout=10)
            return json.loads(await asyncio.wait_for(future, timeout=10))

        return await timed_asks(ask, n)


async def rpc_server(prefix: str) -> None:
    """`--rpc-server PREFIX`: answer raw RPC requests until SIGTERM (a separate process)."""
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    async with connection:
        publish = await connection.channel(publisher_confirms=True, on_return_raises=True)
        consume = await connection.channel(publisher_confirms=False)
        await consume.set_qos(prefetch_count=PREFETCH)
        queue = await consume.declare_queue(
            f"{prefix}raw.rpc", durable=True, arguments={"x-queue-type": "quorum"}
        )

        async def on_request(incoming: AbstractIncomingMessage) -> None:
            payload = json.loads(incoming.body)
            reply = _raw_message(
                json.dumps(payload).encode(), correlation_id=incoming.correlation_id
            )
            await publish.default_exchange.publish(
                reply, incoming.reply_to or "", mandatory=True, timeout=10
            )
            await incoming.ack()

        await queue.consume(on_request)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("rpc server ready", file=sys.stderr, flush=True)
        await stop.wait()


# -- processes -----------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _start_child(name: str, command: list[str], env: dict[str, str], logdir: Path) -> Child:
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=out
        )
    return Child(name, process, log)


async def _wait_ready(child: Child, marker: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker in child.log.read_text(errors="replace"):
            return
        if child.process.poll() is not None:
            break
        await asyncio.sleep(0.1)
    tail = child.log.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{child.name} did not become ready:\n{tail}")


def _stop_child(child: Child) -> None:
    if child.process.poll() is None:
        child.process.send_signal(signal.SIGTERM)
        try:
            child.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def _worker_env(prefix: str, node: str) -> dict[str, str]:
    # Untraced unless a variant says so, whatever the shell exports.
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(
        {
            "MAS_TRANSPORT": "rabbitmq",
            "MAS_AMQP_URL": AMQP_URL,
            "MAS_AMQP__PREFIX": prefix,
            "MAS_NODE_ID": node,
            "MAS_PERSIST": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")])),
        }
    )
    return env


def _worker_command(classes: tuple[str, ...], module: str = "mas.cli") -> list[str]:
    command = [sys.executable, "-m", module, "worker", "--no-persist"]
    command += ["--instances", str(INSTANCES), "--log-level", "WARNING"]
    for cls in classes:
        command += ["--agents", f"bench_agents:{cls}"]
    return command


def _bench_settings(prefix: str) -> Settings:
    """The benchmark process's runtime: it sends the work and hosts the collector."""
    return Settings(
        transport="rabbitmq",
        amqp_url=AMQP_URL,  # type: ignore[arg-type]
        amqp=AmqpSettings(prefix=prefix),
        node_id="bench",
        persist=False,
        log_level="WARNING",
    )


# -- variants of mas_2_workers_noio --------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """mas_2_workers_noio with its processes configured otherwise: `mas_2_workers_noio_<name>`.

    Its two workers (NoIoPair only, 16 agents each, as in w1 and w2) and the runtime that sends
    to them live under the prefix `<run prefix><name>.`: a `type:` send then reaches only the
    workers configured so, and the plain contenders' processes stay as they were.
    """

    name: str
    env: dict[str, str] = field(default_factory=dict)  # added to the workers' environment
    args: tuple[str, ...] = ()  # added to their `mas worker` command
    traced: bool = False  # the sending runtime makes spans too (exported as its workers' are)
    module: str = "mas.cli"  # what the workers run (`python -m <module> worker ...`)

    def prefix(self, run_prefix: str) -> str:
        return f"{run_prefix}{self.name}."


def _variants(sink: str) -> list[Variant]:
    """The variants to run: the traced one only where the `otel` extra is installed."""
    metrics = Variant("metrics", args=("--metrics-port", "0"))
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        _say("no traced variant: OpenTelemetry is not installed (mas-runtime[otel])")
        return [metrics]
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink, "OTEL_BSP_SCHEDULE_DELAY": str(SPAN_DELAY_MS)}
    return [
        Variant("traced", env=otel, traced=True),
        Variant("traced_noop", traced=True, module="bench_noop_tracing"),
        metrics,
    ]


class OtlpSink:
    """An OTLP/HTTP endpoint that answers every export with 200 and an empty body, dropping the
    spans: traced processes pay for making, batching, encoding and posting spans, as they would
    to a collector, and no collector's own work lands on the benchmark's CPUs.

    A thread of the benchmark process serves it; `endpoint` is what `OTEL_EXPORTER_OTLP_ENDPOINT`
    must say. It has to outlive the traced workers, which export what is left when they stop.
    """

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: one connection per exporter

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _tracer_provider(variant: Variant) -> Any:
    """What `variant`'s workers build, for the benchmark's own runtime (which turns tracing on
    as an embedding application does: `tracing.use(provider)`)."""
    if variant.module == "bench_noop_tracing":
        from bench_noop_tracing import noop_provider

        return noop_provider("mas-bench")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": "mas-bench"}),
        id_generator=tracing.id_generator(),
    )
    env = variant.env
    exporter = OTLPSpanExporter(endpoint=env["OTEL_EXPORTER_OTLP_ENDPOINT"] + "/v1/traces")
    delay = int(env["OTEL_BSP_SCHEDULE_DELAY"])
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=delay))
    return provider


async def _start_variant(
    stack: AsyncExitStack,
    variant: Variant,
    run_prefix: str,
    progress: Progress,
    children: list[Child],
    logdir: Path,
) -> Runtime:
    """Start `variant`'s sending runtime (closed with `stack`) and its two workers (added to
    `children`, not waited for); returns the runtime."""
    prefix = variant.prefix(run_prefix)
    if variant.traced:
        provider = _tracer_provider(variant)
        stack.callback(provider.shutdown)  # after the runtime stopped: exports the rest
        tracing.use(provider)
        try:
            rt = Runtime(_bench_settings(prefix))  # a runtime takes the tracing of its creation
        finally:
            tracing.use(None)
    else:
        rt = Runtime(_bench_settings(prefix))
    await stack.enter_async_context(rt)
    # Its workers report to the collector under their own prefix (run ids never collide).
    await rt.spawn(functools.partial(Collector, progress), id="bench-collector")
    for node in ("w1", "w2"):
        env = {**_worker_env(prefix, node), **variant.env}
        command = [*_worker_command(("NoIoPair",), variant.module), *variant.args]
        children.append(_start_child(f"{node}-{variant.name}", command, env, logdir))
    return rt


# -- cleanup -------------------------------------------------------------------------------


def _listed(kind: str, prefix: str) -> set[str]:
    """Queue or exchange names with our prefix, from rabbitmqctl when it is at hand."""
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", f"list_{kind}", "name"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in done.stdout.splitlines() if line.startswith(prefix)}


def _io_seconds() -> float:
    from bench_agents import IO_SECONDS

    return IO_SECONDS


def _known_queues(prefix: str) -> set[str]:
    names = {"raw.work", "raw.rpc", "taskiq", "taskiq.dead_letter", "agents.dead_letter"}
    names.add("agent.bench-collector")
    from bench_agents import (
        BenchChild,
        BenchEcho,
        BenchFanOut,
        IoPair,
        IoSolo,
        NoIoPair,
        NoIoSolo,
    )

    hosted = {
        "w1": (IoSolo, IoPair, NoIoSolo, NoIoPair, BenchEcho, BenchFanOut),
        "w2": (IoPair, NoIoPair, BenchChild),
    }
    for node, classes in hosted.items():
        for cls in classes:
            names.add(f"agent_type.{cls.type}")
            names |= {f"agent.{cls.type}-{node}-{n}" for n in range(INSTANCES)}
    return {prefix + name for name in names}


async def delete_topology(prefix: str) -> int:
    queues = _known_queues(prefix) | _listed("queues", prefix)
    exchanges = {prefix + name for name in (*MAS_EXCHANGES, "taskiq")}
    exchanges |= _listed("exchanges", prefix)
    connection = await aio_pika.connect(AMQP_URL, timeout=10)
    deleted = 0
    async with connection:
        for kind, names in (("queue", queues), ("exchange", exchanges)):
            for name in sorted(names):
                channel = await connection.channel()
                try:
                    if kind == "queue":
                        await channel.queue_delete(name, if_unused=False, if_empty=False)
                    else:
                        await channel.exchange_delete(name)
                    deleted += 1
                except AMQPError:
                    pass  # never declared, or already gone
                finally:
                    if not channel.is_closed:
                        await channel.close()
    left = _listed("queues", prefix) | _listed("exchanges", prefix)
    if left:
        _say(f"warning: left on the broker: {sorted(left)}")
    return deleted


# -- running -------------------------------------------------------------------------------


async def run_scenario(name: str, contenders: list[Contender], reps: int) -> None:
    for rep in range(reps):
        shift = rep % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            sample = await contender.trial()
            contender.samples.append(sample)
            seconds = sample["seconds"]
            _say(
                f"  {name} rep {rep + 1}/{reps} {contender.name}: {seconds:.3f} s "
                f"({contender.n / seconds:,.0f}/s)"
            )


def _result(contender: Contender) -> dict[str, Any]:
    runs = [s["seconds"] for s in contender.samples]
    median = statistics.median(runs)
    result: dict[str, Any] = {
        "n": contender.n,
        "median_s": median,
        "per_s": contender.n / median,
        "us_per_op": median / contender.n * 1e6,
        "runs_s": runs,
    }
    if "body_bytes" in contender.samples[0]:
        result["body_bytes"] = contender.samples[0]["body_bytes"]
    if "latencies" in contender.samples[0]:
        p50 = [_percentile(s["latencies"], 0.5) * 1e6 for s in contender.samples]
        p99 = [_percentile(s["latencies"], 0.99) * 1e6 for s in contender.samples]
        result.update(p50_us=statistics.median(p50), p99_us=statistics.median(p99), p50_runs_us=p50)
    return result


async def fanout_trial(rt: Runtime, n: int, *, durable: bool) -> dict[str, Any]:
    """One message to a fan-out agent on worker 1, which asks `n` children on worker 2 at
    once (over the broker: worker 1 hosts none, so none is routed locally); timed until
    its answer, once all children answered."""
    gc.collect()
    start = time.perf_counter()
    reply = await rt.ask(
        "type:bench_fanout", Message("bench.fanout", {"n": n, "durable": durable}), timeout=300
    )
    seconds = time.perf_counter() - start
    if reply.payload["answers"] != n:
        raise RuntimeError(f"fan-out: {reply.payload['answers']}/{n} answers")
    return {"seconds": seconds}


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    sizes = Sizes(noio=2_000, io=600, ask=300, fanout=200) if args.quick else Sizes()
    reps = args.reps or (2 if args.quick else 3)
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    report: dict[str, Any] = {"meta": _meta(args, sizes, reps, prefix)}
    _say(f"distributed benchmark: prefix {prefix!r}, sizes {sizes}, {reps} reps")
    logdir = Path(tempfile.mkdtemp(prefix="mas-bench-"))
    children: list[Child] = []
    sink = OtlpSink()
    variants = _variants(sink.endpoint)
    report["meta"]["variants"] = {
        variant.name: {
            "env": variant.env,
            "args": variant.args,
            "module": variant.module,
            "traced_sender": variant.traced,
        }
        for variant in variants
    }
    try:
        rpc = _start_child(
            "rpc-server",
            [sys.executable, str(HERE / "distributed.py"), "--rpc-server", prefix],
            dict(os.environ),
            logdir,
        )
        children.append(rpc)
        progress = Progress()
        async with Runtime(_bench_settings(prefix)) as rt, AsyncExitStack() as stack:
            # The collector's queue must exist before the workers report to it.
            await rt.spawn(functools.partial(Collector, progress), id="bench-collector")
            for node, classes in (("w1", W1_AGENTS), ("w2", W2_AGENTS)):
                env = _worker_env(prefix, node)
                children.append(_start_child(node, _worker_command(classes), env, logdir))
            senders = {
                variant.name: await _start_variant(
                    stack, variant, prefix, progress, children, logdir
                )
                for variant in variants
            }
            _say(f"starting {len(children) - 1} mas workers and the raw RPC server ...")
            for child in children:
                marker = "rpc server ready" if child is rpc else "ready; SIGTERM"
                await _wait_ready(child, marker)
            _say("ready")

            noio = [
                Contender("raw_aio_pika", sizes.noio, lambda: raw_trial(prefix, sizes.noio)),
                Contender("bare_taskiq", sizes.noio, lambda: taskiq_trial(prefix, sizes.noio)),
                Contender(
                    "mas_1_worker_noio",
                    sizes.noio,
                    lambda: mas_trial(rt, progress, "bench_noio_solo", sizes.noio),
                ),
                Contender(
                    "mas_2_workers_noio",
                    sizes.noio,
                    lambda: mas_trial(rt, progress, "bench_noio_pair", sizes.noio),
                ),
                *(
                    Contender(
                        f"mas_2_workers_noio_{name}",
                        sizes.noio,
                        functools.partial(
                            mas_trial, sender, progress, "bench_noio_pair", sizes.noio
                        ),
                    )
                    for name, sender in senders.items()
                ),
            ]
            io = [
                Contender(
                    "mas_1_worker",
                    sizes.io,
                    lambda: mas_trial(rt, progress, "bench_io_solo", sizes.io),
                ),
                Contender(
                    "mas_2_workers",
                    sizes.io,
                    lambda: mas_trial(rt, progress, "bench_io_pair", sizes.io),
                ),
            ]
            ask = [
                Contender("mas_ask", sizes.ask, lambda: mas_ask_trial(rt, sizes.ask)),
                Contender("raw_aio_pika_rpc", sizes.ask, lambda: raw_rpc_trial(prefix, sizes.ask)),
            ]
            fanout = [
                Contender(
                    "mas_fanout_durable",
                    sizes.fanout,
                    lambda: fanout_trial(rt, sizes.fanout, durable=True),
                ),
                Contender(
                    "mas_fanout_plain",
                    sizes.fanout,
                    lambda: fanout_trial(rt, sizes.fanout, durable=False),
                ),
            ]
            scenarios = {
                "noio": (noio, "messages through a quorum queue, handler returns at once"),
                "io": (
                    io,
                    f"messages to {INSTANCES} agents per worker awaiting "
                    f"{_io_seconds() * 1000:g} ms each",
                ),
                "ask": (ask, "sequential cross-process request/reply round trips"),
                "fanout": (
                    fanout,
                    "one workflow on worker 1 asks N children on worker 2 at once: "
                    "durable steps vs plain concurrent asks",
                ),
            }
            report["scenarios"] = {}
            for name, (contenders, description) in scenarios.items():
                _say(f"{name}: {description}")
                await run_scenario(name, contenders, reps)
                report["scenarios"][name] = {
                    "description": description,
                    "results": {c.name: _result(c) for c in contenders},
                }
    finally:
        for child in children:
            _stop_child(child)
        sink.close()  # after the traced workers exported their last spans
        deleted = await delete_topology(prefix)
        for variant in variants:
            deleted += await delete_topology(variant.prefix(prefix))
        report["meta"]["deleted_broker_objects"] = deleted
        report["meta"]["child_logs"] = str(logdir)
    report["meta"]["loadavg_at_end"] = os.getloadavg()
    report["ratios"], report["targets"] = ratios_and_targets(report["scenarios"])
    return report


# -- ratios and rendering ------------------------------------------------------------------


def ratios_and_targets(
    scenarios: dict[str, Any],
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    noio = scenarios["noio"]["results"]
    io = scenarios["io"]["results"]
    ask = scenarios["ask"]["results"]
    ratios = {
        "mas_1_worker_noio_vs_bare_taskiq": noio["mas_1_worker_noio"]["per_s"]
        / noio["bare_taskiq"]["per_s"],
        "mas_1_worker_noio_vs_raw_aio_pika": noio["mas_1_worker_noio"]["per_s"]
        / noio["raw_aio_pika"]["per_s"],
        "mas_2_workers_noio_vs_mas_1_worker_noio": noio["mas_2_workers_noio"]["per_s"]
        / noio["mas_1_worker_noio"]["per_s"],
        "mas_ask_p50_vs_raw_rpc_p50": ask["mas_ask"]["p50_us"] / ask["raw_aio_pika_rpc"]["p50_us"],
        "mas_ask_p99_vs_raw_rpc_p99": ask["mas_ask"]["p99_us"] / ask["raw_aio_pika_rpc"]["p99_us"],
        "mas_2_workers_vs_mas_1_worker_io": io["mas_2_workers"]["per_s"]
        / io["mas_1_worker"]["per_s"],
        "mas_fanout_durable_vs_plain": scenarios["fanout"]["results"]["mas_fanout_durable"]["per_s"]
        / scenarios["fanout"]["results"]["mas_fanout_plain"]["per_s"],
    }
    for name in noio:
        if name.startswith("mas_2_workers_noio_"):  # a variant: what its configuration costs
            ratios[f"{name}_vs_mas_2_workers_noio"] = (
                noio[name]["per_s"] / noio["mas_2_workers_noio"]["per_s"]
            )
    checks = [
        ("mas_1_worker (no-I/O) / bare_taskiq", "mas_1_worker_noio_vs_bare_taskiq", 1.0, ">="),
        ("mas_1_worker (no-I/O) / raw_aio_pika", "mas_1_worker_noio_vs_raw_aio_pika", 0.7, ">="),
        ("mas ask p50 / raw rpc p50", "mas_ask_p50_vs_raw_rpc_p50", 1.5, "<="),
        ("mas_2_workers / mas_1_worker (I/O)", "mas_2_workers_vs_mas_1_worker_io", 1.6, ">="),
        ("fan-out durable / plain", "mas_fanout_durable_vs_plain", 0.5, ">="),
    ]
    targets = []
    for label, key, limit, op in checks:
        value = ratios[key]
        passed = value >= limit if op == ">=" else value <= limit
        targets.append({"name": label, "ratio": key, "value": value, "limit": f"{op} {limit}"})
        targets[-1]["passed"] = passed
    return ratios, targets


def render(report: dict[str, Any]) -> str:
    lines = []
    for name, scenario in report["scenarios"].items():
        lines.append(f"{name}: {scenario['description']} (median)")
        rows = [["contender", "n", "msg/s", "µs/op", "body B", "p50 µs", "p99 µs", "runs s"]]
        for contender, r in scenario["results"].items():
            rows.append(
                [
                    contender,
                    str(r["n"]),
                    f"{r['per_s']:,.0f}",
                    f"{r['us_per_op']:.1f}",
                    str(r.get("body_bytes", "-")),
                    f"{r['p50_us']:.0f}" if "p50_us" in r else "-",
                    f"{r['p99_us']:.0f}" if "p99_us" in r else "-",
                    " ".join(f"{s:.2f}" for s in r["runs_s"]),
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = (cell.rjust(w) for cell, w in zip(row, widths, strict=True))
            lines.append("  " + "  ".join(cells))
    lines.append("ratios")
    for key, value in report["ratios"].items():
        lines.append(f"  {key:50s} {value:.2f}")
    lines.append("targets (informational)")
    for t in report["targets"]:
        mark = "PASS" if t["passed"] else "MISS"
        lines.append(f"  {mark}  {t['name']}: {t['value']:.2f} (target {t['limit']})")
    return "\n".join(lines)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git() -> str | None:
    def git(*args: str) -> str:
        command = ["git", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "--short", "HEAD").strip()
        dirty = bool(git("status", "--porcelain", "--", "mas").strip())
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def _meta(args: argparse.Namespace, sizes: Sizes, reps: int, prefix: str) -> dict[str, Any]:
    return {
        "git": _git(),
        "started_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "reps": reps,
        "sizes": sizes.__dict__,
        "prefix": prefix,
        "window": WINDOW,
        "prefetch": PREFETCH,
        "instances_per_worker": INSTANCES,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "versions": {
            name: _version(name)
            for name in ("mas-runtime", "aio-pika", "aiormq", "taskiq", "taskiq-aio-pika")
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repetitions")
    parser.add_argument("--reps", type=int, default=0, help="repetitions per contender")
    parser.add_argument("--rpc-server", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rpc_server is not None:
        asyncio.run(rpc_server(args.rpc_server))
        return
    sys.path.insert(0, str(HERE))  # bench_agents, for the names to clean up
    report = asyncio.run(run_all(args))
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
