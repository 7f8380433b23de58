"""Real `mas api` + `mas worker` processes on one test's own slice of the services.

`System` is the environment every process of one test shares (a PostgreSQL schema, a RabbitMQ
vhost + name prefix, a Redis key prefix, a JWT secret) and the processes it started; the
`system` fixture migrates the schema first, as a user would, and kills every process and
deletes the test's Redis keys afterwards. Tests talk HTTP to the gateway and read the
database (`rows`) and the workers' effects files (`effects`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from mas.api.auth import mint_token
from mas.config import Settings
from mas.persistence import open_store
from tests.amqp_support import AmqpScope
from tests.integration.pg_support import PgSchema, admin_connection
from tests.process_support import MasProcess, clean_environment
from tests.redis_support import REDIS_URL, delete_keys, reachable_redis

__all__ = [
    "DRAFTER",
    "EFFECT_ECHO",
    "FAN_OUT",
    "FRAGILE",
    "LONG_ASK",
    "SECRET",
    "SIGNAL_WAITER",
    "SLOW_ECHO",
    "STEP_PIPELINE",
    "TIMED_PIPELINE",
    "WRITER",
    "System",
    "effects",
    "rows",
    "system",
]

SECRET = "d" * 40
SLOW_ECHO = "tests.integration.work_agents:SlowEcho"
STEP_PIPELINE = "tests.integration.work_agents:StepPipeline"
SIGNAL_WAITER = "tests.integration.work_agents:SignalWaiter"
TIMED_PIPELINE = "tests.integration.work_agents:TimedPipeline"
EFFECT_ECHO = "tests.integration.work_agents:EffectEcho"
FAN_OUT = "tests.integration.work_agents:FanOut"
LONG_ASK = "tests.integration.work_agents:LongAsk"
FRAGILE = "tests.integration.work_agents:Fragile"
DRAFTER = "tests.model_agents:Drafter"
WRITER = "tests.model_agents:Writer"


class System:
    """The environment every process of one test shares, and the processes started."""

    def __init__(self, scope: AmqpScope, pg: PgSchema, tmp: Path) -> None:
        self.tmp = tmp
        self.pg = pg
        self.amqp_url = scope.url
        self.prefix = scope.prefix
        self.env = clean_environment(
            MAS_TRANSPORT="rabbitmq",
            MAS_AMQP_URL=scope.url,
            MAS_AMQP__PREFIX=scope.prefix,
            MAS_DATABASE_URL=pg.url,
            MAS_DATABASE_SCHEMA=pg.schema,
            MAS_AUTH__JWT_SECRET=SECRET,
            MAS_SHUTDOWN_TIMEOUT="20",
            MAS_HEARTBEAT_INTERVAL="0.5",
            MAS_REDIS_URL=REDIS_URL,
        )
        self.processes: list[MasProcess] = []
        self.redis: aioredis.Redis
        self.redis_prefix = ""
        self.url = ""
        scopes = [
            "tasks:read",
            "tasks:write",
            "agents:read",
            "agents:admin",
            "messages:write",
            "dead_letters:read",
            "dead_letters:admin",
        ]
        self.token = mint_token(SECRET, "tester", scopes, ttl=600)
        scope.extra_queues |= {
            f"{scope.prefix}agent_type.echo",
            f"{scope.prefix}agent_type.slow_echo",
            f"{scope.prefix}agent_type.step_pipeline",
            f"{scope.prefix}agent_type.signal_waiter",
            f"{scope.prefix}agent_type.timed_pipeline",
            f"{scope.prefix}agent_type.effect_echo",
            f"{scope.prefix}agent_type.fan_out",
            f"{scope.prefix}agent_type.long_ask",
            f"{scope.prefix}agent_type.fragile",
            f"{scope.prefix}agent_type.drafter",
            f"{scope.prefix}agent_type.writer",
            f"{scope.prefix}agent_type.planner",
            f"{scope.prefix}agent_type.mas.spawner.echo",
            f"{scope.prefix}agent_type.mas.spawner.slow_echo",
            f"{scope.prefix}agent_type.mas.spawner.step_pipeline",
            f"{scope.prefix}agent_type.mas.spawner.signal_waiter",
            f"{scope.prefix}agent_type.mas.spawner.timed_pipeline",
            f"{scope.prefix}agent_type.mas.spawner.effect_echo",
            f"{scope.prefix}agent_type.mas.spawner.fan_out",
            f"{scope.prefix}agent_type.mas.spawner.long_ask",
            f"{scope.prefix}agent_type.mas.spawner.fragile",
            f"{scope.prefix}agent_type.mas.spawner.drafter",
            f"{scope.prefix}agent_type.mas.spawner.writer",
            f"{scope.prefix}agent_type.mas.spawner.planner",
            f"{scope.prefix}agent.echo-special",
            f"{scope.prefix}agent.echo-extra",
            f"{scope.prefix}agent.se-gone",
            f"{scope.prefix}agents.dead_letter",
        }

    def start(self, args: list[str], **env: str) -> MasProcess:
        process = MasProcess(args, self.env | env, self.tmp)
        self.processes.append(process)
        return process

    def api(self, *agents: str, **env: str) -> MasProcess:
        args = ["api", "--port", "0"]
        for agent in agents:
            args += ["--agents", agent]
        api = self.start(args, **env)
        line = api.wait_for(lambda line: line.startswith("mas api: "))
        self.url = line.split()[2]
        api.wait_for(lambda line: '"event": "runtime_started"' in line)
        return api

    def worker(self, *agents: str, effects: str = "", **options: str) -> MasProcess:
        args = ["worker"]
        for agent in agents:
            args += ["--agents", agent]
        for name, value in options.items():
            args += [f"--{name}", value]
        worker = self.start(args, MAS_TEST_EFFECTS=effects) if effects else self.start(args)
        worker.wait_for(lambda line: "ready; SIGTERM" in line)
        return worker

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60
        )


@pytest.fixture
async def system(
    amqp_scope: AmqpScope, pg_schema: PgSchema, tmp_path: Path
) -> AsyncIterator[System]:
    settings = Settings(database_url=pg_schema.url, database_schema=pg_schema.schema)
    store = await open_store(settings, migrate=True)  # `mas db upgrade`, as a user would
    await store.close()
    redis = await reachable_redis()
    system = System(amqp_scope, pg_schema, tmp_path)
    system.redis = redis
    system.redis_prefix = f"mas:{amqp_scope.prefix}"
    try:
        yield system
    finally:
        for process in system.processes:
            process.kill()
        await delete_keys(redis, system.redis_prefix)
        await redis.aclose()


async def rows(pg: PgSchema, query: str) -> list[asyncpg.Record]:
    """What `query` returns in the test's schema (read as the admin, past any fault)."""
    admin = await admin_connection()
    try:
        await admin.execute(f'SET search_path TO "{pg.schema}"')
        return list(await admin.fetch(query))
    finally:
        await admin.close()


def effects(path: Path) -> list[str]:
    """The message ids a SlowEcho worker appended to its effects file, in order."""
    return path.read_text().split() if path.exists() else []
