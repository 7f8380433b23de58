"""Durable steps in the deployment they are for: `mas api` and `mas worker` processes over
RabbitMQ and PostgreSQL. A worker killed with SIGKILL in the middle of a 5-step workflow:
the broker gives its message to another worker, which reads the finished steps from the
record and does only the rest, and the task's result equals an uninterrupted run's. A
signal sent to a task while no worker runs reaches the workflow once one starts.
"""

from __future__ import annotations

import pytest

from mas.testing import eventually
from tests.amqp_support import amqp_scope, amqp_vhost_url
from tests.integration.system_support import (
    SIGNAL_WAITER,
    STEP_PIPELINE,
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
