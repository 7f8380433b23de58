"""The outbox: a message a commit decided to send reaches its agent exactly once, whatever
fails between the commit and the wire (broker outage, a node that dies, a lost delete).

The gateway and the worker are two runtimes on one in-memory broker (two nodes), recording
into one database, as `mas api` and `mas worker` do over RabbitMQ.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import pytest
from pydantic import SecretStr

from mas import Agent, HandlerResult, Message, TaskResult
from mas.actors.runtime import Runtime
from mas.api.app import create_app
from mas.api.auth import SCOPES, mint_token
from mas.config import AuthSettings, OutboxSettings
from mas.errors import TransportError
from mas.persistence import Store, StoreJournal
from mas.persistence.models import outbox
from mas.testing import eventually
from mas.transports.memory import MemoryBroker, MemoryTransport
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

SECRET = "o" * 40
HEADERS = {"Authorization": f"Bearer {mint_token(SECRET, 'tester', sorted(SCOPES), ttl=600)}"}


class Counting(Agent):
    """Completes every task, counting how often each message id was handled (the effect)."""

    type = "counting"
    handled: ClassVar[Counter[str]] = Counter()
    hold: ClassVar[asyncio.Event | None] = None

    async def handle_message(self, message: Message) -> HandlerResult:
        type(self).handled[message.id] += 1
        if type(self).hold is not None:
            await type(self).hold.wait()
        assert message.task_id is not None
        return TaskResult.succeeded(message.task_id, {"n": message.payload.get("n")})


class Refusing(MemoryTransport):
    """A node's broker connection that refuses every send while `down` (an outage)."""

    down = False

    async def send(self, message: Message, *, resent: bool = False) -> None:
        if self.down:
            raise TransportError("the broker is away (test)")
        await super().send(message, resent=resent)


@pytest.fixture(autouse=True)
def _reset_counts() -> None:
    Counting.handled = Counter()
    Counting.hold = None


class Cluster:
    """A gateway node (HTTP app, no agents) and worker nodes sharing a broker and database."""

    def __init__(self, db: Database, stack: AsyncExitStack) -> None:
        self.db = db
        self.stack = stack
        self.broker = MemoryBroker(serialize=True)
        self.gateway_transport = Refusing(self.broker)
        self.client: httpx.AsyncClient
        self.store: Store

    def settings(self, **overrides: Any) -> Any:
        return self.db.settings(
            auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
            outbox=OutboxSettings(lease=0.5, sweep_interval=0.05),
            database_timeout=1,
            shutdown_timeout=2,
            **overrides,
        )

    async def worker(self, node_id: str = "worker") -> Runtime:
        runtime = await self.stack.enter_async_context(
            Runtime(self.settings(), transport=MemoryTransport(self.broker), node_id=node_id)
        )
        await runtime.spawn(Counting, id=f"counting-{node_id}")
        return runtime

    async def gateway(self) -> Runtime:
        runtime = await self.stack.enter_async_context(
            Runtime(self.settings(), transport=self.gateway_transport, node_id="gateway")
        )
        app = create_app(self.settings(), runtime=runtime)
        await self.stack.enter_async_context(app.router.lifespan_context(app))
        self.client = await self.stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
        return runtime

    async def submit(self, n: int, **params: Any) -> httpx.Response:
        body = {"type": "counting", "payload": {"n": n}}
        return await self.client.post("/tasks/", json=body, params=params, headers=HEADERS)

    async def task(self, task_id: str, wait: float = 0) -> dict[str, Any]:
        response = await self.client.get(
            f"/tasks/{task_id}", params={"wait": wait}, headers=HEADERS
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
async def cluster(db: Database) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        store = await db.open_store(migrate=True)
        stack.push_async_callback(store.close)
        made = Cluster(db, stack)
        made.store = store
        yield made


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
    assert again.status_code == 503  # the broker is known to be away: not accepted again
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


async def test_a_task_for_an_address_nobody_serves_is_refused_and_recorded_failed(
    cluster: Cluster,
) -> None:
    await cluster.gateway()
    refused = await cluster.client.post(
        "/tasks/", json={"agent": "nobody", "payload": {}}, headers=HEADERS
    )
    assert refused.status_code == 404, refused.text
    (task,) = (await cluster.client.get("/tasks/", headers=HEADERS)).json()["items"]
    assert (task["status"], task["error"]["type"]) == ("failed", "UnknownAgent")
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
