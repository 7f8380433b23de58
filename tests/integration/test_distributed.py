"""Distributed mode with real processes: `mas api` and `mas worker` over RabbitMQ and PostgreSQL.

The gateway runs in one process and the workers in others, as DESIGN §1 tells users to run
them; the tests talk HTTP to the gateway and read the database and the processes' JSON logs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from aio_pika.exceptions import ChannelNotFoundEntity

from mas.api.auth import mint_token
from mas.config import Settings
from mas.persistence import open_store
from mas.testing import eventually
from tests.amqp_support import AmqpScope, amqp_scope, amqp_vhost_url
from tests.integration.pg_support import PgSchema, admin_connection
from tests.process_support import MasProcess, clean_environment
from tests.redis_support import REDIS_URL, delete_keys, reachable_redis

__all__ = ["amqp_scope", "amqp_vhost_url"]

pytestmark = pytest.mark.anyio

SECRET = "d" * 40
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SLOW_ECHO = "tests.integration.work_agents:SlowEcho"


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
        scopes = ["tasks:read", "tasks:write", "agents:read", "agents:admin", "messages:write"]
        self.token = mint_token(SECRET, "tester", scopes, ttl=600)
        scope.extra_queues |= {
            f"{scope.prefix}agent_type.echo",
            f"{scope.prefix}agent_type.slow_echo",
            f"{scope.prefix}agent_type.mas.spawner.echo",
            f"{scope.prefix}agent_type.mas.spawner.slow_echo",
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


async def _rows(pg: PgSchema, query: str) -> list[asyncpg.Record]:
    admin = await admin_connection()
    try:
        await admin.execute(f'SET search_path TO "{pg.schema}"')
        return list(await admin.fetch(query))
    finally:
        await admin.close()


async def test_a_task_crosses_from_the_gateway_process_to_a_worker_and_back(system: System) -> None:
    worker = system.worker("agents.echo:EchoAgent")
    api = system.api()
    traceparent = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    async with system.client() as client:
        created = await client.post(
            "/tasks/",
            json={"type": "echo", "payload": {"text": "hi"}},
            headers={"traceparent": traceparent},
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        done = await client.get(f"/tasks/{task_id}", params={"wait": 20})
        # One trip: the gateway commits the task before the worker may see it, and finds
        # the end the worker recorded by reading the store.
        one_trip = await client.post(
            "/tasks/", json={"type": "echo", "payload": {"n": 2}}, params={"wait": 20}
        )
        ready = await client.get("/readyz")
    assert one_trip.status_code == 200, one_trip.text
    assert (one_trip.json()["status"], one_trip.json()["result"]) == ("succeeded", {"n": 2})
    assert ready.json()["checks"] == {"runtime": "ok", "transport": "ok", "store": "ok"}
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"text": "hi"}
    rows = await _rows(system.pg, f"SELECT status FROM tasks WHERE id = '{task_id}'")
    assert [row["status"] for row in rows] == ["succeeded"]
    assert api.terminate() == 0
    assert worker.terminate() == 0
    # One trace id from the HTTP request through the other process's handling.
    api_traces = {e.get("trace_id") for e in api.logs() if e.get("task_id") == task_id}
    worker_traces = {e.get("trace_id") for e in worker.logs() if e.get("task_id") == task_id}
    assert api_traces == {TRACE_ID}, api.logs()
    assert worker_traces == {TRACE_ID}, worker.logs()


async def _submit(client: httpx.AsyncClient, count: int, delay: float) -> list[str]:
    ids = []
    for n in range(count):
        created = await client.post(
            "/tasks/", json={"type": "slow_echo", "payload": {"n": n, "delay": delay}}
        )
        assert created.status_code == 202, created.text
        ids.append(created.json()["id"])
    return ids


async def _wait_all_done(client: httpx.AsyncClient, ids: list[str]) -> dict[str, str]:
    statuses = {}
    for task_id in ids:
        response = await client.get(f"/tasks/{task_id}", params={"wait": 60})
        statuses[task_id] = response.json()["status"]
    return statuses


def _effects(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


async def test_a_worker_killed_mid_run_leaves_its_messages_to_another(system: System) -> None:
    first_effects, second_effects = system.tmp / "first.effects", system.tmp / "second.effects"
    first = system.worker(SLOW_ECHO, effects=str(first_effects))
    system.api()
    async with system.client() as client:
        ids = await _submit(client, 100, delay=0.1)
        # Wait until the first worker is part-way through, then kill it without warning.
        first.wait_for(lambda line: '"event": "task_completed"' in line, timeout=30)
        first.kill()
        killed_after = set(_effects(first_effects))
        assert len(killed_after) < 100, "the first worker finished everything before the kill"
        system.worker(SLOW_ECHO, effects=str(second_effects), instances="10")
        statuses = await _wait_all_done(client, ids)
    assert set(statuses.values()) == {"succeeded"}, statuses
    recorded = await _rows(
        system.pg, "SELECT id, handled_by FROM messages WHERE handled_by IS NOT NULL"
    )
    handled_by = {row["id"]: row["handled_by"] for row in recorded}
    assert set(ids) <= set(handled_by)
    second = _effects(second_effects)
    assert len(second) == len(set(second)), "the second worker handled a message twice"
    # What the killed worker had recorded (committed, so acknowledged or about to be) was not
    # handled again; what it had not recorded, the second worker handled.
    first_agents = f"slow_echo-{_node_id(first)}-"
    recorded_by_first = {m for m, agent in handled_by.items() if agent.startswith(first_agents)}
    assert recorded_by_first, "the first worker recorded nothing before it was killed"
    assert not recorded_by_first & set(second)
    assert set(ids) <= killed_after | set(second)


def _node_id(worker: MasProcess) -> str:
    started = [e["node_id"] for e in worker.logs() if e.get("event") == "runtime_started"]
    assert len(started) == 1, worker.logs()
    return str(started[0])


async def test_sigterm_drains_a_worker_and_others_take_the_rest(system: System) -> None:
    effects = system.tmp / "first.effects"
    first = system.worker(SLOW_ECHO, effects=str(effects))
    system.api()
    async with system.client() as client:
        ids = await _submit(client, 30, delay=0.05)
        first.wait_for(lambda line: '"event": "task_completed"' in line, timeout=30)
        assert first.terminate() == 0, str(first)
        assert any("draining" in line for line in first.lines)
        system.worker(SLOW_ECHO)
        statuses = await _wait_all_done(client, ids)
    assert set(statuses.values()) == {"succeeded"}, statuses
    dead = await _rows(system.pg, "SELECT count(*) FROM tasks WHERE status <> 'succeeded'")
    assert dead[0][0] == 0


async def test_post_agents_starts_the_agent_on_a_worker_that_hosts_its_type(
    system: System,
) -> None:
    worker = system.worker("agents.echo:EchoAgent")
    system.api()
    async with system.client() as client:
        created = await client.post("/agents/", json={"type": "echo", "id": "echo-special"})
        assert created.status_code == 201, created.text
        assert created.json()["node_id"] == _node_id(worker)
        assert created.json()["live"] is True
        again = await client.post("/agents/", json={"type": "echo", "id": "echo-special"})
        assert again.status_code == 409, again.text
        unhosted = await client.post("/agents/", json={"type": "planner", "id": "p1"})
        assert unhosted.status_code == 422
        assert "no worker hosts" in unhosted.json()["detail"]
        reply = await client.post(
            "/agents/echo-special/message",
            params={"wait": 10},
            json={"type": "ping", "payload": {"n": 7}},
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["payload"] == {"n": 7}
        assert reply.json()["sender"] == "agent:echo-special"
        listed = (await client.get("/agents/", params={"type": "echo"})).json()["items"]
        assert {a["id"] for a in listed if a["live"]} >= {"echo-special"}
        assert worker.terminate() == 0
        # The worker stopped its agents: the registry says so.
        stopped = (await client.get("/agents/echo-special")).json()
    assert stopped["status"] == "stopped"
    assert stopped["live"] is False


async def test_a_gateway_given_agent_classes_still_leaves_all_agent_work_to_workers(
    system: System,
) -> None:
    """`mas api --agents` names what POST /agents/ may start; the gateway runs none of it."""
    worker = system.worker("agents.echo:EchoAgent")
    api = system.api("agents.echo:EchoAgent")
    async with system.client() as client:
        created = await client.post("/agents/", json={"type": "echo", "id": "echo-extra"})
        assert created.status_code == 201, created.text
        assert created.json()["node_id"] == _node_id(worker)
        unlisted = await client.post("/agents/", json={"type": "slow_echo"})
        assert unlisted.status_code == 422, unlisted.text
        ids = []
        for n in range(20):
            done = await client.post(
                "/tasks/", json={"type": "echo", "payload": {"n": n}}, params={"wait": 20}
            )
            assert done.json()["status"] == "succeeded", done.text
            ids.append(done.json()["id"])
    rows = await _rows(
        system.pg, "SELECT id, handled_by FROM messages WHERE handled_by IS NOT NULL"
    )
    handled_by = {row["id"]: row["handled_by"] for row in rows}
    worker_agents = {f"echo-{_node_id(worker)}-0", "echo-extra"}
    assert {handled_by[task_id] for task_id in ids} <= worker_agents
    assert not [e for e in api.logs() if e.get("event") == "task_completed"]


async def test_work_for_an_agent_whose_worker_died_ends_visibly_and_its_queue_goes(
    system: System,
) -> None:
    """A worker killed with an agent's work queued: the work is dead-lettered once the
    agent is known gone (never pending for ever), its queue is removed, and new work for
    it is refused at once with the reason."""
    worker = system.worker(SLOW_ECHO)
    # Retired once gone longer than a retry can keep a message away (1 s here) + margins.
    system.api(MAS_RETRY__MAX_DELAY="1")
    async with system.client() as client:
        created = await client.post("/agents/", json={"type": "slow_echo", "id": "se-gone"})
        assert created.status_code == 201, created.text
        ids = []
        for n in range(3):
            accepted = await client.post(
                "/tasks/", json={"agent": "se-gone", "payload": {"n": n, "delay": 30}}
            )
            assert accepted.status_code == 202, accepted.text
            ids.append(accepted.json()["id"])
        await eventually(lambda: _status(client, ids[0], "running"), timeout=30)
        worker.kill()  # the first in its handler, two queued behind it
        ended = [
            (await client.get(f"/tasks/{task_id}", params={"wait": 60})).json() for task_id in ids
        ]
        await eventually(lambda: _agent_status(client, "se-gone", "retired"), timeout=30)
        agent = (await client.get("/agents/se-gone")).json()
        refused = await client.post("/tasks/", json={"agent": "se-gone", "payload": {}})
    assert [(t["status"], t["error"]["reason"]) for t in ended] == [
        ("dead_lettered", "agent_stopped")
    ] * 3, ended
    assert refused.status_code == 409, refused.text
    assert "se-gone" in refused.json()["detail"]
    assert (agent["status"], agent["live"]) == ("retired", False)
    connection = await aio_pika.connect(system.amqp_url, timeout=5)
    try:
        channel = await connection.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(system.prefix + "agent.se-gone", passive=True)
    finally:
        await connection.close()


async def _agent_status(client: httpx.AsyncClient, agent_id: str, status: str) -> bool:
    return bool((await client.get(f"/agents/{agent_id}")).json()["status"] == status)


async def _status(client: httpx.AsyncClient, task_id: str, status: str) -> bool:
    return bool((await client.get(f"/tasks/{task_id}")).json()["status"] == status)


async def test_a_worker_heartbeats_in_redis_while_it_lives(system: System) -> None:
    worker = system.worker("agents.echo:EchoAgent")
    key = f"{system.redis_prefix}node:{_node_id(worker)}"
    beat = await system.redis.get(key)
    assert beat is not None, "no heartbeat key while the worker runs"
    info = json.loads(beat)
    assert info["types"] == ["echo"]
    ttl_ms = await system.redis.pttl(key)
    assert 0 < ttl_ms <= 1500  # 3 heartbeat intervals of 0.5 s
    assert worker.terminate() == 0
    assert await system.redis.get(key) is None, "the heartbeat outlived a clean stop"
