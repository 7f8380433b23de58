"""The outbox: a message a commit decided to send reaches its agent exactly once, whatever
fails between the commit and the wire (broker outage, a node that dies, a lost delete).

The gateway and the worker are two runtimes on one in-memory broker (two nodes), recording
into one database, as `mas api` and `mas worker` do over RabbitMQ (see cluster.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mas import Message
from mas.persistence import Store, StoreJournal
from mas.persistence.models import outbox
from mas.testing import eventually
from tests.unit.persistence.cluster import HEADERS, Cluster, Counting, cluster

__all__ = ["cluster"]

pytestmark = pytest.mark.anyio


async def test_a_task_for_another_node_goes_after_its_commit_and_its_row_then_goes(
    cluster: Cluster,
) -> None:
    await cluster.worker()
    await cluster.gateway()
    done = await cluster.submit(1, wait=10)
    assert done.status_code == 200, done.text
    assert (done.json()["status"], done.json()["result"]) == ("succeeded", {"n": 1})
    await eventually(lambda: _empty(cluster.store), timeout=10)
    assert list(Counting.handled.values()) == [1]


async def _empty(store: Store) -> bool:
    return await store.outbox_ids() == []


async def test_tasks_accepted_while_the_broker_is_away_are_sent_once_it_is_back(
    cluster: Cluster,
) -> None:
    await cluster.worker()
    gateway = await cluster.gateway()
    cluster.gateway_transport.down = True
    accepted = await cluster.submit(1)
    # Committed with its message in the outbox: accepted, and kept until it can go.
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["id"]
    assert await cluster.store.outbox_ids() == [task_id]
    refused = await cluster.submit(2)
    # Known to be away now: refused at once, nothing stored; the client may retry.
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"]
    assert refused.json()["title"] == "Broker Unavailable"
    assert (await cluster.client.get("/tasks/", headers=HEADERS)).json()["items"][0]["id"] == (
        task_id
    )
    cluster.gateway_transport.down = False
    ended = await cluster.task(task_id, wait=10)
    assert (ended["status"], ended["result"]) == ("succeeded", {"n": 1})
    await gateway.settle()
    assert await cluster.store.outbox_ids() == []
    assert Counting.handled == Counter({task_id: 1})
    assert (await cluster.submit(3, wait=10)).json()["status"] == "succeeded"


async def test_a_repeated_keyed_submission_during_an_outage_is_sent_once(
    cluster: Cluster,
) -> None:
    await cluster.worker()
    await cluster.gateway()
    cluster.gateway_transport.down = True
    body = {"type": "counting", "payload": {"n": 7}}
    keyed = {"Idempotency-Key": "order-7", **HEADERS}
    first = await cluster.client.post("/tasks/", json=body, headers=keyed)
    assert first.status_code == 202, first.text
    again = await cluster.client.post("/tasks/", json=body, headers=keyed)
    # The broker is known to be away: new work is refused, a repeat gets what it was.
    assert (again.status_code, again.json()["status"]) == (200, "pending"), again.text
    other = await cluster.client.post(
        "/tasks/", json=body, headers={**keyed, "Idempotency-Key": "order-8"}
    )
    assert other.status_code == 503, other.text
    cluster.gateway_transport.down = False
    assert (await cluster.task("order-7", wait=10))["status"] == "succeeded"
    repeated = await cluster.client.post("/tasks/", json=body, headers=keyed)
    assert (repeated.status_code, repeated.json()["status"]) == (200, "succeeded")
    assert Counting.handled == Counter({"order-7": 1})


async def test_rows_a_dead_node_left_are_sent_by_another_nodes_relay(
    cluster: Cluster,
) -> None:
    """The gateway committed a task and died before sending it: a relay on any other node
    claims the row once its lease ran out and sends it; it is handled once."""
    message = Message("job", {"n": 5}, id="orphan-1", target="type:counting")
    message.metadata["task_id"] = message.id
    await cluster.store.create_task(message.id, "job", {"n": 5}, target="type:counting")
    await _insert(cluster.store, _row(message, "dead-node"))
    worker = await cluster.worker()
    journal = worker.journal
    assert isinstance(journal, StoreJournal)
    await eventually(lambda: _succeeded(cluster.store, "orphan-1"), timeout=10)
    await eventually(lambda: _empty(cluster.store), timeout=10)
    assert Counting.handled == Counter({"orphan-1": 1})
    assert journal.relay.resent == 1


async def test_a_row_left_after_its_message_was_sent_is_not_handled_twice(
    cluster: Cluster,
) -> None:
    """The broker took the message, then the node died before its row's delete committed:
    the row is sent again, and the receiver sees it was handled already."""
    await cluster.worker()
    await cluster.gateway()
    done = await cluster.submit(1, wait=10)
    task_id = done.json()["id"]
    assert done.json()["status"] == "succeeded"
    resent = Message("counting", {"n": 1}, id=task_id, target="type:counting")
    resent.metadata["task_id"] = task_id
    await _insert(cluster.store, _row(resent, "dead-node"))
    await eventually(lambda: _empty(cluster.store), timeout=10)
    assert Counting.handled == Counter({task_id: 1})
    assert (await cluster.task(task_id))["status"] == "succeeded"


async def test_a_task_for_an_address_nobody_serves_is_refused_and_nothing_is_stored(
    cluster: Cluster,
) -> None:
    """A typo in the target is the client's mistake: 404, and no task, row or dead letter."""
    await cluster.gateway()
    refused = await cluster.client.post(
        "/tasks/", json={"agent": "nobody", "payload": {}}, headers=HEADERS
    )
    assert refused.status_code == 404, refused.text
    assert (await cluster.client.get("/tasks/", headers=HEADERS)).json()["items"] == []
    assert await cluster.store.outbox_ids() == []


async def test_a_task_cancelled_before_its_message_went_is_never_sent(cluster: Cluster) -> None:
    await cluster.worker()
    gateway = await cluster.gateway()
    cluster.gateway_transport.down = True
    task_id = (await cluster.submit(1)).json()["id"]
    cancelled = await cluster.client.post(f"/tasks/{task_id}/cancel", headers=HEADERS)
    assert cancelled.json()["status"] == "cancelled"
    cluster.gateway_transport.down = False
    assert (await cluster.submit(2, wait=10)).json()["status"] == "succeeded"
    await gateway.settle()
    assert task_id not in Counting.handled
    assert await cluster.store.outbox_ids() == []


async def test_a_node_holding_a_message_renews_its_lease_so_no_other_node_sends_it(
    cluster: Cluster,
) -> None:
    """A local agent works on a task far longer than the lease: the row stays its node's,
    so the other node's relay does not send it a second time."""
    Counting.hold = asyncio.Event()
    gateway = await cluster.gateway()
    await gateway.spawn(Counting, id="local")
    other = await cluster.worker("other")
    task_id = (
        await cluster.client.post(
            "/tasks/", json={"agent": "local", "payload": {"n": 1}}, headers=HEADERS
        )
    ).json()["id"]
    await eventually(lambda: _holds(cluster.store, task_id), timeout=10)
    # Workload: twice what a row is held for after its write (lease + database timeout).
    await asyncio.sleep(2 * (0.5 + 1))
    assert await cluster.store.outbox_ids() == [task_id]
    Counting.hold.set()
    assert (await cluster.task(task_id, wait=10))["status"] == "succeeded"
    await gateway.settle()
    await other.settle()
    assert Counting.handled == Counter({task_id: 1})
    assert await cluster.store.outbox_ids() == []


async def _holds(store: Store, message_id: str) -> bool:
    return message_id in await store.outbox_ids()


async def _succeeded(store: Store, task_id: str) -> bool:
    task = await store.get_task(task_id)
    return task is not None and task.status == "succeeded"


async def _insert(store: Store, row: dict[str, Any]) -> None:
    """An outbox row as a node that died left it (its lease long over)."""
    async with store.writing() as conn:
        await conn.execute(outbox.insert(), [row])


def _row(message: Message, owner: str) -> dict[str, Any]:
    past = datetime.now(UTC) - timedelta(seconds=60)
    return {
        "id": message.id,
        "message": message.to_dict(),
        "owner": owner,
        "available_at": past,
        "attempts": 0,
        "created_at": past,
    }
