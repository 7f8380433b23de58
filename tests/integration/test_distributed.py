"""Distributed mode with real processes: `mas api` and `mas worker` over RabbitMQ and PostgreSQL.

The gateway runs in one process and the workers in others, as DESIGN §1 tells users to run
them; the tests talk HTTP to the gateway and read the database and the processes' JSON logs.
"""

from __future__ import annotations

import json

import aio_pika
import httpx
import pytest
from aio_pika.exceptions import ChannelNotFoundEntity

from mas.testing import eventually
from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.integration.system_support import SLOW_ECHO, System, effects, rows, system
from tests.process_support import MasProcess

__all__ = ["amqp_scope", "amqp_vhost_url", "system"]

pytestmark = pytest.mark.anyio

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


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
    found = await rows(system.pg, f"SELECT status FROM tasks WHERE id = '{task_id}'")
    assert [row["status"] for row in found] == ["succeeded"]
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


async def test_a_worker_killed_mid_run_leaves_its_messages_to_another(system: System) -> None:
    first_effects, second_effects = system.tmp / "first.effects", system.tmp / "second.effects"
    first = system.worker(SLOW_ECHO, effects=str(first_effects))
    system.api()
    async with system.client() as client:
        ids = await _submit(client, 100, delay=0.1)
        # Wait until the first worker is part-way through, then kill it without warning.
        first.wait_for(lambda line: '"event": "task_completed"' in line, timeout=30)
        first.kill()
        killed_after = set(effects(first_effects))
        assert len(killed_after) < 100, "the first worker finished everything before the kill"
        system.worker(SLOW_ECHO, effects=str(second_effects), instances="10")
        statuses = await _wait_all_done(client, ids)
    assert set(statuses.values()) == {"succeeded"}, statuses
    recorded = await rows(
        system.pg, "SELECT id, handled_by FROM messages WHERE handled_by IS NOT NULL"
    )
    handled_by = {row["id"]: row["handled_by"] for row in recorded}
    assert set(ids) <= set(handled_by)
    second = effects(second_effects)
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
    first = system.worker(SLOW_ECHO, effects=str(system.tmp / "first.effects"))
    system.api()
    async with system.client() as client:
        ids = await _submit(client, 30, delay=0.05)
        first.wait_for(lambda line: '"event": "task_completed"' in line, timeout=30)
        assert first.terminate() == 0, str(first)
        assert any("draining" in line for line in first.lines)
        system.worker(SLOW_ECHO)
        statuses = await _wait_all_done(client, ids)
    assert set(statuses.values()) == {"succeeded"}, statuses
    dead = await rows(system.pg, "SELECT count(*) FROM tasks WHERE status <> 'succeeded'")
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
    handled = await rows(
        system.pg, "SELECT id, handled_by FROM messages WHERE handled_by IS NOT NULL"
    )
    handled_by = {row["id"]: row["handled_by"] for row in handled}
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


async def test_a_capability_finds_the_type_a_worker_runs_through_the_agents_registry(
    system: System,
) -> None:
    """The gateway runs no agent and knows no class: `capability:` is resolved from what the
    workers recorded (their agents' types and capabilities, kept live by heartbeats)."""
    system.worker("agents.echo:EchoAgent")
    system.api()
    async with system.client() as client:

        async def echo_is_live() -> bool:
            listed = await client.get("/agents/", params={"type": "echo"})
            return any(agent["live"] for agent in listed.json()["items"])

        await eventually(echo_is_live, timeout=30)
        by_spec = await client.post(
            "/tasks/", json={"capability": "echo", "payload": {"n": 1}}, params={"wait": 20}
        )
        by_message = await client.post(
            "/tasks/",
            json={"type": "task", "target": "capability:echo", "payload": {"n": 2}},
            params={"wait": 20},
        )
        unknown = await client.post("/tasks/", json={"capability": "translate"})
    for done, n in ((by_spec, 1), (by_message, 2)):
        assert done.status_code == 200, done.text
        task = done.json()
        assert (task["target"], task["status"], task["result"]) == (
            "type:echo",
            "succeeded",
            {"n": n},
        )
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["title"] == "Unknown Capability"


async def test_a_task_with_a_deadline_waits_for_a_worker_that_offers_its_capability(
    system: System,
) -> None:
    """Nobody offers `echo` when the task comes: it waits (its message sent again, backing
    off, by any node's relay) until a worker that offers it starts, within its deadline."""
    system.api()
    async with system.client() as client:
        created = await client.post(
            "/tasks/", json={"capability": "echo", "payload": {"n": 3}, "deadline": 120}
        )
        assert created.status_code == 202, created.text
        assert created.json()["target"] == "capability:echo"
        system.worker("agents.echo:EchoAgent")
        done = await client.get(f"/tasks/{created.json()['id']}", params={"wait": 60})
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"n": 3}
