"""The dead-letter table on SQLite and PostgreSQL: one row per message, settled once."""

from __future__ import annotations

from datetime import UTC, datetime

import anyio
import pytest
from sqlalchemy import select

from mas.errors import DeadLetterSettled, UnknownDeadLetter
from mas.messages import Message
from mas.persistence import Store
from mas.persistence.dead_letters import REPLAY_OF_KEY, DeadLetterArchive
from mas.persistence.models import dead_letters, outbox
from mas.persistence.store import Batch

pytestmark = pytest.mark.anyio


def _row(message: Message, reason: str = "max_attempts") -> dict[str, object]:
    return {
        "id": message.id,
        "message": message.to_dict(),
        "target": str(message.target),
        "message_type": message.type,
        "reason": reason,
        "agent_id": "a-1",
        "error": {"type": "RuntimeError", "message": "no"},
        "attempts": 3,
        "task_id": None,
        "trace_id": message.trace_id,
        "node_id": "node-1",
        "status": "dead",
        "created_at": datetime.now(UTC),
    }


async def test_a_message_dead_lettered_twice_is_one_letter(store: Store) -> None:
    message = Message("work", {"n": 1}, target="type:worker")
    await store.apply(Batch(dead_letters=[_row(message)]))
    await store.apply(Batch(dead_letters=[_row(message, reason="unroutable")]))
    letters = await DeadLetterArchive(store).list()
    assert [(x.id, x.reason) for x in letters] == [(message.id, "max_attempts")]


async def test_concurrent_replays_send_one_copy(store: Store) -> None:
    message = Message("work", {"n": 1}, target="type:worker", metadata={"k": "v"})
    await store.apply(Batch(dead_letters=[_row(message)]))
    archive = DeadLetterArchive(store)
    results = []

    async def replay() -> None:
        results.append(await archive.replay(message.id, "ops", owner="node-1", lease=10))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(replay)
    sent = [row for _, row in results if row is not None]
    assert len(sent) == 1
    copy_id, copy = sent[0]
    assert {letter.replayed_as for letter, _ in results} == {copy_id}
    assert copy["metadata"] == {"k": "v", REPLAY_OF_KEY: message.id}
    assert (copy["target"], copy["payload"]) == ("type:worker", {"n": 1})
    async with store.reading() as conn:
        rows = (await conn.execute(select(outbox.c.id, outbox.c.owner))).all()
    assert [tuple(row) for row in rows] == [(copy_id, "node-1")]


async def test_replay_and_discard_exclude_each_other(store: Store) -> None:
    first, second = (Message("work", {}, target="agent:a-1") for _ in range(2))
    await store.apply(Batch(dead_letters=[_row(first), _row(second)]))
    archive = DeadLetterArchive(store)
    await archive.replay(first.id, "ops", owner=None, lease=10)
    with pytest.raises(DeadLetterSettled, match="already replayed"):
        await archive.discard(first.id, "ops")
    discarded = await archive.discard(second.id, "ops")
    assert (discarded.status, discarded.settled_by) == ("discarded", "ops")
    with pytest.raises(DeadLetterSettled, match="already discarded"):
        await archive.replay(second.id, "ops", owner=None, lease=10)
    with pytest.raises(UnknownDeadLetter):
        await archive.discard("nope", "ops")
    async with store.reading() as conn:
        statuses = dict(
            (await conn.execute(select(dead_letters.c.id, dead_letters.c.status))).all()
        )
    assert statuses == {first.id: "replayed", second.id: "discarded"}
