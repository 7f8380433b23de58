"""TaskService: the task use cases, called as application code (no HTTP), on a real gateway.

Every refusal is a typed mas error (never an HTTP exception): the HTTP layer maps it.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from agents.echo import EchoAgent
from mas import Runtime
from mas.api.auth import Claims
from mas.api.backlogs import Backlogs
from mas.api.schemas import TaskIn
from mas.api.state import Gateway
from mas.api.tasks import ADMIN, TaskService, owner_filter
from mas.config import Settings
from mas.errors import (
    IdempotencyKeyReused,
    MasError,
    TaskFinished,
    TaskIdTaken,
    UnknownAgent,
    UnknownTask,
)
from mas.persistence.journal import StoreJournal
from tests.unit.api.conftest import TroubleAgent

pytestmark = pytest.mark.anyio

LATER = datetime.now(UTC) + timedelta(hours=1)
ALICE = Claims("alice", frozenset({"tasks:read", "tasks:write"}), LATER)
BOB = Claims("bob", frozenset({"tasks:read", "tasks:write"}), LATER)
OPS = Claims("ops", frozenset({"tasks:read", "tasks:write", ADMIN}), LATER)


def echo(**fields: object) -> TaskIn:
    return TaskIn.model_validate({"type": "echo", "payload": {"text": "hi"}, **fields})


async def test_a_submission_waited_for_comes_back_ended(gw: Gateway) -> None:
    task, created = await gw.tasks.submit(echo(), ALICE, trace_id="t" * 32, wait=5)
    assert created
    assert task.status == "succeeded"
    assert task.result == {"text": "hi"}
    assert (task.created_by, task.trace_id, task.target) == ("alice", "t" * 32, "type:echo")
    assert await gw.tasks.get(task.id, ALICE) == task


async def test_a_task_answered_with_a_plain_reply_succeeds_with_its_payload(
    gw: Gateway,
) -> None:
    spec = TaskIn.model_validate({"type": "trouble", "message_type": "plain", "payload": {}})
    task, _ = await gw.tasks.submit(spec, ALICE, wait=5)
    assert (task.status, task.result) == ("succeeded", {"handled": "plain", "calls": 1})


async def test_a_submission_not_waited_for_is_readable_at_once(gw: Gateway) -> None:
    task, created = await gw.tasks.submit(echo(), ALICE)
    assert created
    assert await gw.store.get_task(task.id) is not None
    ended = await gw.tasks.wait_for_end(task.id, ALICE, 5)
    assert ended.status == "succeeded"


async def test_a_repeated_key_returns_the_same_task_not_a_new_one(gw: Gateway) -> None:
    first, created = await gw.tasks.submit(echo(), ALICE, idempotency_key="k-1", wait=5)
    again, created_again = await gw.tasks.submit(echo(), ALICE, idempotency_key="k-1")
    assert created and not created_again
    assert again.id == first.id == "k-1"
    assert len(await gw.tasks.list(ALICE)) == 1


async def test_another_callers_key_is_taken(gw: Gateway) -> None:
    await gw.tasks.submit(echo(id="order-1"), ALICE)
    with pytest.raises(TaskIdTaken, match="order-1"):
        await gw.tasks.submit(echo(id="order-1"), BOB)


async def test_a_key_reused_for_a_different_request_is_refused(gw: Gateway) -> None:
    await gw.tasks.submit(echo(id="order-2"), ALICE)
    with pytest.raises(IdempotencyKeyReused, match="different request"):
        await gw.tasks.submit(
            TaskIn.model_validate({"type": "echo", "id": "order-2", "payload": {"n": 2}}), ALICE
        )


async def test_a_capability_nobody_offers_is_an_unknown_agent(gw: Gateway) -> None:
    spec = TaskIn.model_validate({"capability": "telepathy"})
    with pytest.raises(UnknownAgent, match="telepathy"):
        await gw.tasks.submit(spec, ALICE)
    assert await gw.tasks.list(OPS) == []


async def test_a_capability_nobody_offers_falls_back_to_the_type_given_with_it(
    gw: Gateway,
) -> None:
    spec = TaskIn.model_validate({"capability": "telepathy", "type": "echo", "payload": {"n": 1}})
    task, _ = await gw.tasks.submit(spec, ALICE, wait=5)
    assert (task.target, task.status, task.result) == ("type:echo", "succeeded", {"n": 1})


async def test_a_capability_someone_offers_wins_over_the_fallback_type(gw: Gateway) -> None:
    spec = TaskIn.model_validate({"capability": "echo", "type": "trouble"})
    task, _ = await gw.tasks.submit(spec, ALICE, wait=5)
    assert task.target == "type:echo"


async def test_another_callers_task_is_as_unknown_as_none(gw: Gateway) -> None:
    task, _ = await gw.tasks.submit(echo(), ALICE, wait=5)
    for call in (
        gw.tasks.get(task.id, BOB),
        gw.tasks.wait_for_end(task.id, BOB, 1),
        gw.tasks.cancel(task.id, BOB),
        gw.tasks.get("nope", ALICE),
    ):
        with pytest.raises(UnknownTask) as raised:
            await call
        assert isinstance(raised.value, MasError)
        assert isinstance(raised.value, LookupError)
    assert await gw.tasks.get(task.id, OPS) == task  # tasks:admin sees everyone's


async def test_the_list_is_the_callers_own_unless_admin(gw: Gateway) -> None:
    mine, _ = await gw.tasks.submit(echo(), ALICE, wait=5)
    theirs, _ = await gw.tasks.submit(echo(), BOB, wait=5)
    assert [t.id for t in await gw.tasks.list(ALICE)] == [mine.id]
    assert {t.id for t in await gw.tasks.list(OPS)} == {mine.id, theirs.id}
    assert (owner_filter(ALICE), owner_filter(OPS)) == ("alice", None)


async def test_cancel_ends_a_running_task_and_refuses_a_finished_one(
    gw: Gateway, trouble: type[TroubleAgent]
) -> None:
    spec = TaskIn.model_validate({"agent": "trouble", "message_type": "slow"})
    running, _ = await gw.tasks.submit(spec, ALICE)
    await asyncio.wait_for(trouble.started.wait(), 5)
    cancelled = await gw.tasks.cancel(running.id, ALICE)
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert (await gw.tasks.cancel(running.id, ALICE)).status == "cancelled"  # idempotent
    ended, _ = await gw.tasks.submit(echo(), ALICE, wait=5)
    with pytest.raises(TaskFinished, match="already succeeded") as raised:
        await gw.tasks.cancel(ended.id, ALICE)
    assert raised.value.status == "succeeded"


async def test_changes_yield_the_task_then_each_new_status_until_it_ends(
    gw: Gateway, trouble: type[TroubleAgent]
) -> None:
    spec = TaskIn.model_validate({"agent": "trouble", "message_type": "slow"})
    task, _ = await gw.tasks.submit(spec, ALICE)
    stream = gw.streams.open(task.id, "alice")
    assert stream is not None
    try:
        read = await gw.tasks.get(task.id, ALICE)
        stream.seen(read.status)
        changes = gw.tasks.changes(read, stream, 10)
        statuses = [(await anext(changes)).status]
        await asyncio.wait_for(trouble.started.wait(), 5)
        trouble.release.set()
        statuses += [t.status async for t in changes]
    finally:
        stream.close()
    assert statuses[-1] == "succeeded"
    assert len(statuses) == len(set(statuses))  # one per change, no repeats


async def test_the_service_runs_on_a_plain_runtime_without_the_http_app(
    settings: Settings,
) -> None:
    async with Runtime(settings.model_copy(update={"persist": True})) as runtime:
        await runtime.spawn(EchoAgent, id="echo")
        journal = runtime.journal
        assert isinstance(journal, StoreJournal)
        backlogs = Backlogs(runtime.transport, limit=settings.api.max_queue_depth)
        tasks = TaskService(settings, runtime, journal, backlogs)
        spec = TaskIn.model_validate({"capability": "echo", "payload": {"n": 1}})
        task, created = await tasks.submit(spec, ALICE, wait=5)
        assert created
        assert (task.status, task.result, task.target) == ("succeeded", {"n": 1}, "type:echo")
        assert await tasks.get(task.id, ALICE) == task
