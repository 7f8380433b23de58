"""The chaos soak: a gateway and N workers on the real services, load, faults, a verdict.

`run_soak(SoakConfig(...))` does it all and returns the report (see checker.py for what it
judges and how): a fresh PostgreSQL schema (migrated) with an effects table, RabbitMQ names
under a fresh prefix, Redis keys under the matching prefix; a fault proxy in front of each
service; `mas worker` x N hosting `tests.soak.soak_agent:SoakAgent` and one `mas api`; the
load generator for `load_seconds` while the schedule injects its faults; a quiet period until
every task is final (bounded); the processes stopped; the database read; the checker.

Every wait is bounded, and whatever happens (a failed start, Ctrl-C, a bug here) the
processes are killed, the proxies closed, and the schema, queues and keys deleted.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import asyncpg
import redis.asyncio as aioredis
from anyio.abc import TaskGroup

from mas.api.auth import mint_token
from mas.config import Settings, masked_url
from mas.persistence import open_store
from tests.amqp_support import AMQP_URL, delete_topology
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.integration.pg_support import PG_URL, postgres_dsn
from tests.process_support import ROOT, clean_environment
from tests.redis_support import REDIS_URL, delete_keys
from tests.soak.checker import Effect, History, TaskState, render
from tests.soak.load import LoadGenerator
from tests.soak.processes import Slot, SoakProcess
from tests.soak.schedule import FaultRecord, FaultSpec, fixed_schedule
from tests.soak.soak_agent import TYPE, effects_table_sql

__all__ = ["SoakConfig", "render", "run_soak"]

SECRET = "s" * 40
AGENT = "tests.soak.soak_agent:SoakAgent"
PROGRESS_EVERY = 10.0  # seconds between progress lines
CLEANUP_TIMEOUT = 120.0
MIN_GAP = 1.0  # seconds between a fault's recovery and the next fault
TAIL = 5.0  # seconds of load after the last fault's recovery


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class SoakConfig:
    """What to run; the defaults are the CI run's (60 s, the fixed schedule)."""

    load_seconds: float = 60.0
    rate: float = 20.0  # tasks submitted per second
    work: float = 0.02  # seconds of simulated I/O per task, the effect halfway
    workers: int = 3
    instances: int = 4  # soak agents per worker
    schedule: list[FaultSpec] | None = None  # None: fixed_schedule(load_seconds, workers)
    seed: int = 0  # the client's key/keyless draws and jitter
    keyed_share: float = 0.75
    give_up: float = 60.0  # a keyed task's retries stop this long after its first attempt
    quiet_deadline: float = 90.0  # longest wait, after the load, for every task to be final
    healthy_latency: float = 2.0
    recovery_deadline: float = 60.0  # longest wait for recovery before the next fault
    start_timeout: float = 60.0  # a process must say it is ready within this
    stop_timeout: float = 30.0  # SIGTERM, then SIGKILL after this
    restart_delay: float = 1.0  # a killed or stopped process is restarted after this
    logdir: Path | None = None
    amqp_url: str = AMQP_URL
    pg_url: str = PG_URL
    redis_url: str = REDIS_URL
    say: Callable[[str], None] = _stderr


@dataclass
class _Run:
    """Names of one run's slice of the services."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def schema(self) -> str:
        return f"mas_soak_{self.id}"

    @property
    def prefix(self) -> str:
        return f"soak{self.id}."

    @property
    def effects(self) -> str:
        return f'"{self.schema}".soak_effects'


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _host_port(url: str, default: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


async def _admin() -> asyncpg.Connection:
    return await asyncpg.connect(postgres_dsn(), timeout=10)


class Soak:
    """One run; `run()` returns the report. Use `run_soak`."""

    def __init__(self, config: SoakConfig) -> None:
        self.config = config
        self.say = config.say
        self.run_names = _Run()
        self.logdir = config.logdir or Path(tempfile.mkdtemp(prefix="mas-soak-"))
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.schedule = config.schedule or fixed_schedule(config.load_seconds, config.workers)
        self.faults: list[FaultRecord] = []
        self.slots: dict[str, Slot] = {}
        self.proxies: dict[str, FaultProxy] = {}
        self.t0 = 0.0
        self.exits: dict[str, int | None] = {}
        self.unexpected_exits: dict[str, int | None] = {}
        self.start_failures: dict[str, int | None] = {}
        self.timings: dict[str, float] = {}
        self.git_commit = _git_commit()  # what runs: taken before, not after a long run

    def log(self, text: str) -> None:
        offset = f"+{time.time() - self.t0:6.1f}s" if self.t0 else "  setup"
        self.say(f"[soak {self.run_names.id} {offset}] {text}")

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        began = time.time()
        self.log(
            f"schema {self.run_names.schema}, prefix {self.run_names.prefix}, logs {self.logdir}"
        )
        try:
            await self._prepare_database()
            async with (
                fault_proxy("rabbitmq", *_host_port(self.config.amqp_url, 5672)) as amqp,
                fault_proxy("postgres", *_host_port(self.config.pg_url, 5432)) as pg,
                fault_proxy("redis", *_host_port(self.config.redis_url, 6379)) as redis,
                anyio.create_task_group() as readers,
            ):
                self.proxies = {"rabbitmq": amqp, "postgres": pg, "redis": redis}
                try:
                    load = await self._run_processes_and_load(readers)
                finally:
                    with anyio.CancelScope(shield=True):
                        await self._stop_processes()
                    readers.cancel_scope.cancel()
            tasks, effects = await self._read_database()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLEANUP_TIMEOUT):
                await self._clean_up()
        self.timings["total_s"] = round(time.time() - began, 1)
        history = History(self.t0, load.submissions, self.faults, tasks, effects)
        (self.logdir / "history.json").write_text(history.to_json())
        return {"meta": self._meta(load)} | history.judge(self.config.healthy_latency)

    async def _run_processes_and_load(self, readers: TaskGroup) -> LoadGenerator:
        config = self.config
        port = _free_port()
        env = self._environment()
        worker_args = ["worker", "--agents", AGENT, "--instances", str(config.instances)]

        def make_slot(role: str, args: list[str], ready: str) -> Slot:
            return Slot(role, args, ready, self.logdir, env, self.logdir, readers, self.log)

        for n in range(1, config.workers + 1):
            self.slots[f"w{n}"] = make_slot(f"w{n}", worker_args, "ready; SIGTERM")
        self.slots["api"] = make_slot(
            "api", ["api", "--port", str(port)], '"event": "runtime_started"'
        )
        started = time.time()
        async with anyio.create_task_group() as starting:
            for role, slot in self.slots.items():
                if role != "api":
                    starting.start_soon(slot.start, config.start_timeout)
        await self.slots["api"].start(config.start_timeout)
        self.timings["start_s"] = round(time.time() - started, 1)
        self.log(f"gateway on 127.0.0.1:{port} and {config.workers} workers ready")

        scopes = ["tasks:read", "tasks:write"]
        token = mint_token(SECRET, "soak", scopes, ttl=config.load_seconds + 3600)
        load = LoadGenerator(
            f"http://127.0.0.1:{port}",
            token,
            config.rate,
            config.work,
            keyed_share=config.keyed_share,
            give_up=config.give_up,
            seed=config.seed,
        )
        self.t0 = time.time()
        self.log(
            f"load: {config.rate:g} tasks/s for {config.load_seconds:g} s, "
            f"{len(self.schedule)} faults scheduled"
        )
        async with anyio.create_task_group() as progress:
            progress.start_soon(self._progress, lambda: load.progress())
            async with anyio.create_task_group() as phase:
                phase.start_soon(load.run, self.t0)
                ready = self.t0
                for n, spec in enumerate(self.schedule):
                    await anyio.sleep(
                        max(0.0, self.t0 + spec.at - time.time(), ready - time.time())
                    )
                    record = await self._inject(n, spec, phase)
                    await self._await_recovery(record, load)
                    ready = time.time() + MIN_GAP
                # Load goes on after the last fault's recovery, to show that it holds.
                end = max(self.t0 + config.load_seconds, ready + TAIL)
                await anyio.sleep(max(0.0, end - time.time()))
                load.stop()
                self.log("load stopped; waiting for submissions in flight")
            self.log(f"load done: {load.progress()}")
            progress.cancel_scope.cancel()
        await self._quiet_period()
        return load

    async def _progress(self, line: Callable[[], str]) -> None:
        while True:
            await anyio.sleep(PROGRESS_EVERY)  # a progress line's pace: not synchronisation
            self.log(line())

    async def _quiet_period(self) -> None:
        """Wait (bounded) until no task in the database is pending or running."""
        started = time.time()
        deadline = started + self.config.quiet_deadline
        last_said = started
        while True:
            open_tasks = await self._count_open_tasks()
            if open_tasks == 0:
                self.log(f"every task final {time.time() - started:.1f} s after the load")
                break
            if time.time() >= deadline:
                self.log(f"quiet period over: {open_tasks} task(s) still pending or running")
                break
            if time.time() - last_said >= PROGRESS_EVERY:
                self.log(f"quiet period: {open_tasks} task(s) pending or running")
                last_said = time.time()
            await anyio.sleep(1.0)  # polling pace of a state nothing signals
        self.timings["quiet_s"] = round(time.time() - started, 1)

    # -- faults ----------------------------------------------------------------------------

    async def _await_recovery(self, record: FaultRecord, load: LoadGenerator) -> None:
        """Wait until a task submitted after the fault's end succeeds promptly (bounded).

        The checker's definition of recovery, watched live: a submission first sent at or
        after `record.ended`, accepted on that first attempt, whose task succeeded within
        `healthy_latency` seconds of it.
        """
        deadline = record.ended + self.config.recovery_deadline
        latency = self.config.healthy_latency
        while time.time() < deadline:
            first_tries = {
                s.task_id: s.first_at
                for s in load.submissions
                if s.first_at >= record.ended and s.task_id and len(s.attempts) == 1
            }
            if first_tries:
                for task_id, finished in await self._finished(list(first_tries)):
                    if finished - first_tries[task_id] <= latency:
                        recovered = first_tries[task_id] - record.ended
                        record.detail["recovered_after_s"] = round(recovered, 2)
                        self.log(
                            f"  recovered: a task sent {recovered:.1f} s after the end succeeded"
                        )
                        return
            await anyio.sleep(0.5)  # polling pace of a state nothing signals
        record.detail["recovered_after_s"] = None
        self.log(f"  not recovered within {self.config.recovery_deadline:g} s; going on")

    async def _finished(self, task_ids: list[str]) -> list[tuple[str, float]]:
        """(id, finished_at) of those tasks that succeeded."""
        admin = await _admin()
        try:
            rows = await admin.fetch(
                "SELECT id, extract(epoch FROM finished_at) AS finished "
                f'FROM "{self.run_names.schema}".tasks '
                "WHERE id = ANY($1) AND status = 'succeeded'",
                task_ids,
                timeout=10,
            )
        finally:
            await admin.close()
        return [(row["id"], float(row["finished"])) for row in rows]

    async def _restart(self, slot: Slot, record: FaultRecord) -> None:
        """Start the slot's next incarnation after the restart delay; the slot is idle after."""
        await anyio.sleep(self.config.restart_delay)  # a supervisor's restart delay
        fresh = await slot.start(self.config.start_timeout)
        record.detail["restarted_as"] = fresh.name
        record.detail["restart_s"] = round(time.time() - record.started, 2)
        self.log(f"  {fresh.name} ready {record.detail['restart_s']} s after the fault")
        slot.idle.set()

    async def _inject(self, n: int, spec: FaultSpec, restarts: TaskGroup) -> FaultRecord:
        """Inject one fault; return once it has ended (see FaultRecord.ended)."""
        record = FaultRecord(spec)
        self.faults.append(record)
        label = f"fault {n + 1}/{len(self.schedule)} {spec.kind}"
        kind = spec.kind
        if kind.startswith(("worker", "gateway")):
            slot = self.slots[spec.target if kind.startswith("worker") else "api"]
            await slot.idle.wait()  # its previous restart is still under way
            slot.idle = anyio.Event()
            victim = slot.current
            assert victim is not None
            record.victim = victim.name
            record.started = time.time()
            if kind.endswith("kill9"):
                self.log(f"{label}: kill -9 {victim.name}")
                await victim.kill()
                record.detail["killed_at"] = victim.signalled_at
            else:
                self.log(f"{label}: SIGTERM {victim.name}")
                code = await victim.stop(self.config.stop_timeout)
                record.detail["drain_s"] = round(time.time() - record.started, 2)
                record.detail["exit_code"] = code
                self.log(f"  {victim.name} exited {code} after {record.detail['drain_s']} s")
            if kind.startswith("worker"):
                # The other workers carry the load: the fault ends with this one's death,
                # and its replacement starts in the background (as a supervisor would).
                record.ended = time.time()
                restarts.start_soon(self._restart, slot, record)
            else:
                await self._restart(slot, record)  # no service until the gateway is back
                record.ended = time.time()
            return record
        proxy = self.proxies["rabbitmq" if kind.startswith("broker") else kind.split("_")[0]]
        record.started = time.time()
        if kind == "broker_cut":
            record.detail["connections_cut"] = proxy.cut()
            record.ended = record.started
            self.log(f"{label}: {record.detail['connections_cut']} connections reset")
            return record
        if kind.endswith("outage"):
            record.detail["connections_cut"] = proxy.refuse()
        else:
            proxy.blackhole()
        self.log(f"{label} for {spec.duration:g} s ({proxy.name})")
        try:
            await anyio.sleep(spec.duration)  # the fault's length: workload
        finally:
            proxy.restore()
            record.ended = time.time()
        record.detail["refused"] = proxy.refused
        self.log(f"  {proxy.name} restored")
        return record

    # -- services --------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        names, proxies = self.run_names, self.proxies
        return clean_environment(
            MAS_TRANSPORT="rabbitmq",
            MAS_AMQP_URL=proxies["rabbitmq"].url(self.config.amqp_url),
            MAS_AMQP__PREFIX=names.prefix,
            MAS_DATABASE_URL=proxies["postgres"].url(self.config.pg_url),
            MAS_DATABASE_SCHEMA=names.schema,
            MAS_REDIS_URL=proxies["redis"].url(self.config.redis_url),
            MAS_AUTH__JWT_SECRET=SECRET,
            MAS_SHUTDOWN_TIMEOUT="20",
            MAS_HEARTBEAT_INTERVAL="1",
            SOAK_EFFECTS_DSN=postgres_dsn(self.config.pg_url),  # direct: not under test
            SOAK_EFFECTS_TABLE=names.effects,
        )

    async def _prepare_database(self) -> None:
        schema = self.run_names.schema
        admin = await _admin()
        try:
            await admin.execute(f'CREATE SCHEMA "{schema}"')
            await admin.execute(effects_table_sql(self.run_names.effects))
        finally:
            await admin.close()
        settings = Settings(database_url=self.config.pg_url, database_schema=schema)
        store = await open_store(settings, migrate=True)  # `mas db upgrade`, as a user would
        await store.close()

    async def _count_open_tasks(self) -> int:
        admin = await _admin()
        try:
            return int(
                await admin.fetchval(
                    f'SELECT count(*) FROM "{self.run_names.schema}".tasks '
                    "WHERE status IN ('pending', 'running')"
                )
            )
        finally:
            await admin.close()

    async def _read_database(self) -> tuple[dict[str, TaskState], list[Effect]]:
        schema = self.run_names.schema
        admin = await _admin()
        try:
            rows = await admin.fetch(
                "SELECT t.id, t.status, t.payload, t.result, t.error, t.attempts, "
                "extract(epoch FROM t.created_at) AS created, "
                "extract(epoch FROM t.finished_at) AS finished, m.handled_by "
                f'FROM "{schema}".tasks t LEFT JOIN "{schema}".messages m ON m.id = t.id'
            )
            effect_rows = await admin.fetch(
                f"SELECT message_id, task_id, node, agent_id, at FROM {self.run_names.effects}"
            )
        finally:
            await admin.close()

        def loads(value: str | None) -> Any:
            return None if value is None else json.loads(value)

        tasks = {
            row["id"]: TaskState(
                row["id"],
                row["status"],
                loads(row["payload"]) or {},
                loads(row["result"]),
                loads(row["error"]),
                row["attempts"],
                float(row["created"]),
                None if row["finished"] is None else float(row["finished"]),
                row["handled_by"],
            )
            for row in rows
        }
        effects = [Effect(**dict(row)) for row in effect_rows]
        return tasks, effects

    async def _stop_processes(self) -> None:
        """SIGTERM every process still running (in parallel), SIGKILL what does not stop.

        A process that had exited before without being signalled (it crashed, or gave up
        on a service) is reported in `meta.unexpected_exits`; one that failed to start (and
        was started again) in `meta.start_failures`.
        """
        for slot in self.slots.values():
            for process in slot.incarnations:
                if process.failed_start:
                    self.start_failures[process.name] = process.returncode
                elif process.exited_at is not None and process.signalled is None:
                    self.unexpected_exits[process.name] = process.returncode
                    self.log(f"{process.name} had exited by itself ({process.returncode})")
        with anyio.move_on_after(self.config.stop_timeout + 35):
            async with anyio.create_task_group() as stopping:
                for slot in self.slots.values():
                    stopping.start_soon(slot.shutdown, self.config.stop_timeout)
        for slot in self.slots.values():
            for process in slot.incarnations:
                if process.running:  # the bound above ran out: no more patience
                    await _force_kill(process)
                self.exits[process.name] = process.returncode

    async def _clean_up(self) -> None:
        names = self.run_names
        try:
            queues = self._queues() | await _listed_queues(names.prefix)
            await delete_topology(self.config.amqp_url, names.prefix, queues)
        except Exception as exc:  # cleanup must go on: report and continue
            self.log(f"cleanup: deleting queues failed: {exc!r}")
        left = await _listed_queues(names.prefix)
        if left:
            self.log(f"cleanup: left on the broker: {sorted(left)}")
        client = aioredis.from_url(self.config.redis_url, socket_timeout=10)
        try:
            await delete_keys(client, f"mas:{names.prefix}")
        except Exception as exc:
            self.log(f"cleanup: deleting Redis keys failed: {exc!r}")
        finally:
            await client.aclose()
        try:
            admin = await _admin()
            try:
                await admin.execute(f'DROP SCHEMA IF EXISTS "{names.schema}" CASCADE')
            finally:
                await admin.close()
        except Exception as exc:
            self.log(f"cleanup: dropping schema {names.schema} failed: {exc!r}")

    def _queues(self) -> set[str]:
        prefix = self.run_names.prefix
        names = {f"agent_type.{TYPE}", f"agent_type.mas.spawner.{TYPE}", "agents.dead_letter"}
        for slot in self.slots.values():
            for process in slot.incarnations:
                names.add(f"agent.mas.spawner.{TYPE}-{process.name}")
                names |= {f"agent.{TYPE}-{process.name}-{n}" for n in range(self.config.instances)}
        return {prefix + name for name in names}

    def _meta(self, load: LoadGenerator) -> dict[str, Any]:
        config = asdict(self.config) | {"say": None, "logdir": str(self.logdir)}
        config["schedule"] = [asdict(spec) for spec in self.schedule]
        for name in ("amqp_url", "pg_url", "redis_url"):  # a report may be shared
            config[name] = masked_url(config[name])
        return {
            "run": self.run_names.id,
            "started": datetime.fromtimestamp(self.t0, UTC).isoformat() if self.t0 else None,
            "git_commit": self.git_commit,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
            "config": config,
            "timings": self.timings,
            "client_schedule_slipped": load.slipped,
            "proxies": {
                name: {"accepted": p.accepted, "refused": p.refused, "severed": p.severed}
                for name, p in self.proxies.items()
            },
            "process_exits": self.exits,
            "unexpected_exits": self.unexpected_exits,
            "start_failures": self.start_failures,
        }


async def _force_kill(process: SoakProcess) -> None:
    if process.process is not None:
        try:
            os.killpg(process.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        await process.wait_exit(10)


async def _listed_queues(prefix: str) -> set[str]:
    """Queues under `prefix` as rabbitmqctl lists them (bounded; empty when unavailable)."""
    with anyio.move_on_after(30):
        try:
            done = await anyio.run_process(
                ["rabbitmqctl", "-q", "list_queues", "name"], check=False
            )
        except OSError:
            return set()
        lines = done.stdout.decode(errors="replace").splitlines()
        return {line.strip() for line in lines if line.startswith(prefix)}
    return set()


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() or "unknown"


async def run_soak(config: SoakConfig) -> dict[str, Any]:
    """Run the soak and return its report (`report["verdict"]["passed"]`)."""
    return await Soak(config).run()
