"""The message audit: what `MAS_AUDIT=all|tasks|off` records, and that a clean stop loses none.

The audit is written in batches behind the hot path; a user relies on it to be complete once
`settle()` returns or the runtime has stopped, and to follow a trace from request to reply.
"""

from __future__ import annotations

import pytest

from agents.echo import EchoAgent
from mas import Message
from mas.persistence import Store
from mas.persistence.models import messages
from mas.persistence.store import TRACE_LIMIT, message_row
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

TRACE = "0af7651916cd43dd8448eb211c80319c"


async def test_audit_all_records_each_handled_message_and_each_reply_in_trace_order(
    db: Database, store: Store
) -> None:
    async with db.runtime(audit="all") as rt:
        await rt.spawn(EchoAgent, id="e")
        first = Message("ping", {"n": 1}, trace_id=TRACE)
        reply_1 = await rt.ask("agent:e", first, timeout=5)
        second = Message("ping", {"n": 2}, trace_id=TRACE)
        reply_2 = await rt.ask("agent:e", second, timeout=5)
        await rt.tell("agent:e", Message("other-trace", {}))
        await rt.settle()
        recorded = await store.trace(TRACE)
    assert [m.id for m in recorded] == [first.id, reply_1.id, second.id, reply_2.id]
    assert [(m.type, m.payload) for m in recorded] == [
        ("ping", {"n": 1}),
        ("ping.reply", {"n": 1}),
        ("ping", {"n": 2}),
        ("ping.reply", {"n": 2}),
    ]
    assert recorded[1].correlation_id == first.id
    assert recorded[1].sender == "agent:e"
    assert recorded[0].target == "agent:e"


async def test_a_trace_log_names_each_handler_and_is_cut_at_its_oldest(
    db: Database, store: Store
) -> None:
    async with db.runtime(audit="all") as rt:
        await rt.spawn(EchoAgent, id="e")
        asked = Message("ping", {"n": 1}, trace_id=TRACE, metadata={"task_id": "t-1"})
        reply = await rt.ask("agent:e", asked, timeout=5)
        await rt.settle()
    log, cut = await store.trace_log(TRACE)
    assert [(m.id, m.handled_by, m.task_id) for m in log] == [
        (asked.id, "e", "t-1"),
        (reply.id, None, "t-1"),  # the asker's reply inbox handles it: no agent
    ]
    assert not cut

    more = [message_row(Message("note", {"n": n}, trace_id=TRACE)) for n in range(TRACE_LIMIT)]
    async with store.writing() as conn:
        await conn.execute(messages.insert(), more)
    log, cut = await store.trace_log(TRACE)
    assert cut and len(log) == TRACE_LIMIT
    assert [m.id for m in log[:2]] == [asked.id, reply.id]
    assert (await store.trace_log(TRACE, limit=1)) == ([log[0]], True)
    with pytest.raises(ValueError, match="limit"):
        await store.trace_log(TRACE, limit=TRACE_LIMIT + 1)


async def test_agent_messages_shows_what_an_agent_received_and_sent(
    db: Database, store: Store
) -> None:
    async with db.runtime(audit="all") as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.spawn(EchoAgent, id="bystander")
        request = Message("ping", {"n": 1})
        reply = await rt.ask("agent:e", request, timeout=5)
        await rt.tell("agent:bystander", Message("ping", {"n": 2}))
        await rt.settle()
        history = await store.agent_messages("e")
    assert {m.id for m in history} == {request.id, reply.id}
    received = [m for m in history if m.target == "agent:e"]
    sent = [m for m in history if m.sender == "agent:e"]
    assert [m.id for m in received] == [request.id]
    assert [m.id for m in sent] == [reply.id]
    assert history[0].id == reply.id  # newest first


async def test_audit_tasks_records_only_messages_that_belong_to_a_task(
    db: Database, store: Store
) -> None:
    async with db.runtime(audit="tasks") as rt:
        await rt.spawn(EchoAgent, id="e")
        plain = Message("ping", {"n": 1})
        await rt.ask("agent:e", plain, timeout=5)
        task = Message("work", {"n": 2}, metadata={"task_id": "t-1"})
        task_reply = await rt.ask("agent:e", task, timeout=5)
        await rt.settle()
        history = await store.agent_messages("e")
        assert await store.handled_count() == 2
    assert {m.id for m in history} == {task.id, task_reply.id}
    assert all(m.metadata.get("task_id") == "t-1" for m in history)


async def test_audit_off_records_no_message_but_still_remembers_processed_ids(
    db: Database, store: Store
) -> None:
    async with db.runtime(audit="off") as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.ask("agent:e", Message("ping", {}), timeout=5)
        await rt.tell("agent:e", Message("work", {}, metadata={"task_id": "t-1"}))
        await rt.settle()
    assert await store.count("messages") == 0
    assert await store.handled_count() == 2
    task = await store.get_task("t-1")
    assert task is not None and task.status == "succeeded"  # tasks are kept regardless


async def test_nothing_handled_is_missing_from_the_audit_after_a_clean_stop(
    db: Database, store: Store
) -> None:
    count = 500
    async with db.runtime(audit="all") as rt:
        await rt.spawn(EchoAgent, id="e")
        for n in range(count):
            await rt.tell("agent:e", Message("ping", {"n": n}))
        # no settle: leaving the block must drain the mailboxes and commit the audit
    assert rt.handled == count
    assert await store.count("messages") == count
    assert await store.handled_count() == count
    history = await store.agent_messages("e", limit=count)
    assert sorted(m.payload["n"] for m in history) == list(range(count))
