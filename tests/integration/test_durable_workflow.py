"""Durable steps in the deployment they are for: `mas api` and `mas worker` processes over
RabbitMQ and PostgreSQL. A worker killed with SIGKILL in the middle of a 5-step workflow:
the broker gives its message to another worker, which reads the finished steps from the
record and does only the rest, and the task's result equals an uninterrupted run's. A
signal sent to a task while no worker runs reaches the workflow once one starts. A handler
in a long wait parks (its worker free, its delivery acknowledged): the timer fires after
every process was killed and new ones started, a signal is pushed to the parked handler by
the gateway that takes it, and a long ask's answer wakes its handler, on another worker
when the asker's was killed meanwhile. A gateway killed as it accepts a workflow, or a
broker outage in the middle of one, changes nothing either. Cancelling a task cancels its
handler on the worker. A worker killed in the middle of a fan-out: its successor asks
again only what was not answered, and no child is handled twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import pytest
from yarl import URL

from mas.testing import eventually
from tests.amqp_support import AmqpScope, amqp_scope, amqp_vhost_url
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.integration.system_support import (
    EFFECT_ECHO,
    FAN_OUT,
    LONG_ASK,
    SIGNAL_WAITER,
    SLOW_ECHO,
    STEP_PIPELINE,
    TIMED_PIPELINE,
    System,
    effects,
    rows,
    system,
)

__all__ = ["amqp_scope", "amqp_vhost_url", "system"]

pytestmark = pytest.mark.anyio

UNINTERRUPTED = {"steps": [10, 20, 30, 40, 50]}


async def _recorded_steps(system: System) -> list[int]:
    found = await rows(system.pg, "SELECT seq FROM workflow_steps ORDER BY seq")
    return [row["seq"] for row in found]


async def test_a_worker_killed_mid_workflow_leaves_no_finished_step_to_redo(
    system: System,
) -> None:
    first_effects, second_effects = system.tmp / "first.effects", system.tmp / "second.effects"
    first = system.worker(STEP_PIPELINE, effects=str(first_effects))
    system.api()
    async with system.client() as client:
        created = await client.post(
            "/tasks/", json={"type": "step_pipeline", "payload": {"delay": 2.0}}
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]

        async def three_recorded() -> bool:
            return len(await _recorded_steps(system)) >= 3

        # Kill it after its third step is committed, during the I/O before the fourth.
        await eventually(three_recorded, timeout=60)
        recorded_before_kill = await _recorded_steps(system)
        first.kill()
        system.worker(STEP_PIPELINE, effects=str(second_effects))
        done = await client.get(f"/tasks/{task_id}", params={"wait": 60})

    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == UNINTERRUPTED
    by_first = [int(line.split(":")[1]) for line in effects(first_effects)]
    by_second = [int(line.split(":")[1]) for line in effects(second_effects)]
    steps = by_first + by_second
    assert sorted(set(steps)) == [1, 2, 3, 4, 5]
    # Every step recorded before the kill ran once: the second worker did not redo it.
    for seq in recorded_before_kill:
        assert steps.count(seq + 1) == 1, (seq, steps)
    assert by_second, "the second worker did nothing"
    assert min(by_second) > len(recorded_before_kill)  # it began after the record
    assert await _recorded_steps(system) == [0, 1, 2, 3, 4]


def _each_step_once(*paths: Path) -> None:
    steps = [int(line.split(":")[1]) for path in paths for line in effects(path)]
    assert sorted(steps) == [1, 2, 3, 4, 5], steps


async def test_a_gateway_killed_as_it_accepts_a_workflow_loses_nothing(system: System) -> None:
    """Killed right after its 202: the task's message may still be in its outbox (another
    node's relay sends it once the dead gateway's lease ran out) or on its way; either way
    the workflow runs once, and another gateway reports its end."""
    worker_effects = system.tmp / "worker.effects"
    system.worker(STEP_PIPELINE, effects=str(worker_effects))
    first = system.api()
    async with system.client() as client:
        created = await client.post(
            "/tasks/", json={"type": "step_pipeline", "payload": {"delay": 0.2}}
        )
        assert created.status_code == 202, created.text
        first.kill()
    task_id = created.json()["id"]
    system.api()
    async with system.client() as client:
        done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == UNINTERRUPTED
    _each_step_once(worker_effects)


@pytest.fixture
async def broker_proxy(amqp_scope: AmqpScope) -> AsyncIterator[FaultProxy]:
    broker = URL(amqp_scope.url)
    async with fault_proxy("rabbitmq", broker.host or "127.0.0.1", broker.port or 5672) as running:
        yield running


async def test_a_broker_outage_mid_workflow_redoes_no_finished_step(
    system: System, broker_proxy: FaultProxy
) -> None:
    """The broker goes away (every connection reset, new ones refused) after step 3: the
    handler goes on with its steps meanwhile; the broker gives the unacknowledged message
    out again once it is back, and that delivery finds the handling recorded."""
    proxied = URL(broker_proxy.url(system.amqp_url)).update_query(reconnect_interval="0.5")
    system.env["MAS_AMQP_URL"] = str(proxied)
    worker_effects = system.tmp / "worker.effects"
    # Started off the event loop, which runs the proxy they connect through.
    await anyio.to_thread.run_sync(
        partial(system.worker, STEP_PIPELINE, effects=str(worker_effects))
    )
    await anyio.to_thread.run_sync(system.api)
    async with system.client() as client:
        created = await client.post(
            "/tasks/", json={"type": "step_pipeline", "payload": {"delay": 1.0}}
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]

        async def recorded(n: int) -> bool:
            return len(await _recorded_steps(system)) >= n

        await eventually(lambda: recorded(3), timeout=60)
        broker_proxy.refuse()
        await eventually(lambda: recorded(4), timeout=60)  # the handler went on meanwhile
        broker_proxy.restore()
        done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == UNINTERRUPTED
    _each_step_once(worker_effects)
    assert broker_proxy.severed > 0  # the outage did cut the processes off


async def test_a_signal_sent_while_no_worker_runs_reaches_the_workflow_later(
    system: System,
) -> None:
    # A worker ran once (its type's queue exists) and stopped: nobody consumes the queue.
    assert system.worker(SIGNAL_WAITER).terminate() == 0
    system.api()
    async with system.client() as client:
        created = await client.post("/tasks/", json={"type": "signal_waiter", "payload": {}})
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        sent = await client.post(f"/tasks/{task_id}/signals/approve", json={"by": "ada"})
        assert (sent.status_code, sent.json()["stored"]) == (202, True), sent.text
        system.worker(SIGNAL_WAITER)  # only now does anyone take the task
        done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"decision": {"by": "ada"}}


PARK_QUICKLY = {"MAS_WORKFLOW__PARK_AFTER": "0.2"}


async def _parked(system: System, task_id: str) -> bool:
    """The task's handler parked: its wake-up (the message's outbox row) is held by no node."""
    found = await rows(system.pg, f"SELECT owner FROM outbox WHERE id = '{task_id}'")
    return len(found) == 1 and found[0]["owner"] is None


async def test_a_parked_timer_fires_after_every_process_was_killed(system: System) -> None:
    system.env |= PARK_QUICKLY
    first_effects, second_effects = system.tmp / "first.effects", system.tmp / "second.effects"
    worker = system.worker(TIMED_PIPELINE, effects=str(first_effects))
    api = system.api()
    async with system.client() as client:
        created = await client.post(
            "/tasks/", json={"type": "timed_pipeline", "payload": {"sleep": 4.0}}
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        await eventually(lambda: _parked(system, task_id), timeout=60)
    worker.kill()
    api.kill()

    system.worker(TIMED_PIPELINE, effects=str(second_effects))
    system.api()
    async with system.client() as client:
        done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"steps": [10, 20]}
    assert effects(first_effects) == [f"{task_id}:1"]
    assert effects(second_effects) == [f"{task_id}:2"]  # step 1 was not done again


async def test_a_signal_is_pushed_to_a_parked_handler_on_another_process(
    system: System,
) -> None:
    # Relays sweep for due wake-ups once a minute: only the gateway's push is quick.
    system.env |= PARK_QUICKLY | {"MAS_OUTBOX__SWEEP_INTERVAL": "60"}
    system.worker(SIGNAL_WAITER)
    system.api()
    async with system.client() as client:
        created = await client.post(
            "/tasks/", json={"type": "signal_waiter", "payload": {"timeout": 3600}}
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        await eventually(lambda: _parked(system, task_id), timeout=60)
        sent = await client.post(f"/tasks/{task_id}/signals/approve", json={"by": "ada"})
        assert sent.status_code == 202, sent.text
        done = await client.get(f"/tasks/{task_id}", params={"wait": 30})
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"decision": {"by": "ada"}}
    assert await rows(system.pg, "SELECT * FROM workflow_waits") == []


async def test_a_long_asks_answer_wakes_its_handler_after_the_askers_worker_died(
    system: System,
) -> None:
    # Relays sweep for due wake-ups once a minute: only the answer's push is quick.
    system.env |= PARK_QUICKLY | {"MAS_OUTBOX__SWEEP_INTERVAL": "60"}
    first_effects, second_effects = system.tmp / "first.effects", system.tmp / "second.effects"
    echo_effects = system.tmp / "echo.effects"
    system.worker(EFFECT_ECHO, effects=str(echo_effects))
    first = system.worker(LONG_ASK, effects=str(first_effects))
    system.api()
    async with system.client() as client:
        created = await client.post("/tasks/", json={"type": "long_ask", "payload": {"delay": 8.0}})
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]
        await eventually(lambda: _parked(system, task_id), timeout=60)
        first.kill()  # parked: the asker holds nothing there any more
        system.worker(LONG_ASK, effects=str(second_effects))
        done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"steps": [10, 20], "answer": 7}
    assert effects(first_effects) == [f"{task_id}:1"]
    assert effects(second_effects) == [f"{task_id}:2"]  # step 1 was not done again
    assert len(effects(echo_effects)) == 1  # asked once


async def test_cancelling_a_task_cancels_its_handler_on_the_worker(system: System) -> None:
    worker_effects = system.tmp / "worker.effects"
    system.worker(SLOW_ECHO, effects=str(worker_effects))  # one agent: one message at a time
    system.api()
    async with system.client() as client:
        slow = await client.post("/tasks/", json={"type": "slow_echo", "payload": {"delay": 600}})
        task_id = slow.json()["id"]

        async def running() -> bool:
            task = await client.get(f"/tasks/{task_id}")
            return bool(task.json()["status"] == "running")

        await eventually(running, timeout=60)
        cancelled = await client.post(f"/tasks/{task_id}/cancel")
        assert cancelled.json()["status"] == "cancelled", cancelled.text
        # The worker's only agent is free again: the cancellation ended the 600 s handler.
        quick = await client.post(
            "/tasks/", json={"type": "slow_echo", "payload": {"delay": 0}}, params={"wait": 60}
        )
        assert quick.json()["status"] == "succeeded", quick.text
        after = await client.get(f"/tasks/{task_id}")
    assert after.json()["status"] == "cancelled"
    assert effects(worker_effects) == [quick.json()["id"]]  # the cancelled one never finished


@pytest.mark.parametrize("child_workers", [1, 2])
async def test_a_worker_killed_mid_fan_out_has_no_child_handled_twice(
    system: System, child_workers: int
) -> None:
    """The children answered after the parent's worker died went to its node: they are
    kept (recorded with the child), and the re-run, asking again, is answered from them
    without the child being handled again; with one child worker and with two."""
    children_effects = [system.tmp / f"children-{i}.effects" for i in range(child_workers)]
    for path in children_effects:
        system.worker(EFFECT_ECHO, effects=str(path))  # one child at a time each
    first = system.worker(FAN_OUT)
    system.api()
    n = 20
    async with system.client() as client:
        created = await client.post(
            "/tasks/", json={"type": "fan_out", "payload": {"n": n, "delay": 0.5}}
        )
        assert created.status_code == 202, created.text
        task_id = created.json()["id"]

        async def some_answers_recorded() -> bool:
            found = await rows(
                system.pg, f"SELECT seq FROM workflow_steps WHERE message_id = '{task_id}'"
            )
            return len(found) >= 5

        await eventually(some_answers_recorded, timeout=60)
        first.kill()
        system.worker(FAN_OUT)
        done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
        tree = await client.get(f"/tasks/{task_id}/tree")

    assert done.json()["status"] == "succeeded", done.text
    assert done.json()["result"] == {"sum": sum(range(n)), "answers": n}  # as uninterrupted
    handled = [child for path in children_effects for child in effects(path)]
    assert len(handled) == n and len(set(handled)) == n, handled  # each child once
    children = tree.json()["children"]
    assert len(children) == n
    assert {child["status"] for child in children} == {"succeeded"}
