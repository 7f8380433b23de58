"""An agent gone for good: work for it is refused at once with the reason, and its record and
queue are retired, so nothing waits for it for ever (issue 12, "addressing a gone agent").

Two nodes on one in-memory broker and database (cluster.py); the RabbitMQ side, where a
queue outlives its agent, is in tests/integration (test_amqp_transport, test_distributed).
"""

from __future__ import annotations

import pytest

from mas.persistence import StoreJournal
from tests.unit.persistence.cluster import HEADERS, Cluster, Counting, cluster

__all__ = ["cluster"]

pytestmark = pytest.mark.anyio


async def test_work_for_an_agent_stopped_on_another_node_is_refused_with_its_id(
    cluster: Cluster,
) -> None:
    worker = await cluster.worker()
    await worker.spawn(Counting, id="leaving")
    await cluster.gateway()
    served = await cluster.client.post(
        "/tasks/", json={"agent": "leaving"}, params={"wait": 10}, headers=HEADERS
    )
    assert served.json()["status"] == "succeeded", served.text
    await worker.stop_agent("leaving")
    await worker.settle()  # the stop is recorded
    refused = await cluster.client.post("/tasks/", json={"agent": "leaving"}, headers=HEADERS)
    assert refused.status_code == 409, refused.text
    assert "'leaving'" in refused.json()["detail"]
    keyed = {**HEADERS, "Idempotency-Key": "for-leaving"}
    assert (
        await cluster.client.post("/tasks/", json={"agent": "leaving"}, headers=keyed)
    ).status_code == 409
    listed = (await cluster.client.get("/tasks/", headers=HEADERS)).json()["items"]
    assert [task["status"] for task in listed] == ["succeeded"]  # nothing refused was stored


async def test_an_agent_gone_longer_than_a_retry_can_take_is_retired(cluster: Cluster) -> None:
    worker = await cluster.worker()
    await worker.spawn(Counting, id="short-lived")
    await worker.stop_agent("short-lived")
    await worker.settle()
    journal = worker.journal
    assert isinstance(journal, StoreJournal)
    journal.retire_after = 0  # long enough ago: the record shows it stopped, nothing more
    assert await journal.retire_gone(worker) >= 1
    record = await cluster.store.get_agent("short-lived")
    assert record is not None
    assert (record.status, record.metadata["stop_reason"]) == ("retired", "stopped")
    assert await journal.retire_gone(worker) == 0  # once is enough
    running = await cluster.store.get_agent("counting-worker")
    assert running is not None and running.status == "running"  # alive: never retired
