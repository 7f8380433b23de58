"""Cancelling a task reaches its handler on whichever node runs it: the gateway records the
cancellation, the worker finds it within a heartbeat and cancels the handler (it sees
`CancelledError` at its next await), the agent is free for its next message, and the
cancelled message is not retried. SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio

import pytest

from mas.testing import eventually
from tests.unit.persistence.cluster import HEADERS, Cluster, Counting, cluster

__all__ = ["cluster"]

pytestmark = pytest.mark.anyio


async def test_cancelling_a_task_cancels_its_handler_on_another_node(cluster: Cluster) -> None:
    Counting.hold = asyncio.Event()  # never set: only the cancellation ends the handler
    worker = await cluster.worker(heartbeat_interval=0.1)
    await cluster.gateway()
    task_id = (await cluster.submit(1)).json()["id"]
    await eventually(lambda: task_id in Counting.handled, timeout=10)

    cancelled = await cluster.client.post(f"/tasks/{task_id}/cancel", headers=HEADERS)
    assert cancelled.json()["status"] == "cancelled", cancelled.text
    await eventually(lambda: worker.stats()["cancelled"] == 1, timeout=10)

    Counting.hold = None
    assert (await cluster.submit(2, wait=10)).json()["status"] == "succeeded"  # agent free
    assert Counting.handled[task_id] == 1  # settled, not retried
    assert (await cluster.task(task_id))["status"] == "cancelled"
