"""Dead letters as data: the `dead_letters` table, read, replayed and discarded.

The journal writes a row with the commit of every dead letter it is told of (any node, any
transport), so an operator sees one list for the cluster wherever the letter happened, and
listing takes nothing off a queue. A replay and a discard settle the row with one
conditional update: of two operators (or two clicks) only one settles it, and the other is
told what happened instead. A replay's copy of the message goes into the outbox in the same
transaction, so it is sent even if the process dies right after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Row, insert, select, update

from mas.errors import DeadLetterSettled, UnknownDeadLetter
from mas.messages import Message, new_id
from mas.persistence.models import dead_letters, outbox, tasks

if TYPE_CHECKING:
    from mas.persistence.store import Store

__all__ = ["REPLAY_OF_KEY", "DeadLetterArchive", "DeadLetterRecord"]

REPLAY_OF_KEY = "mas.replay_of"
"""Metadata of a replayed copy: the id of the dead-lettered message it replays."""

Status = Literal["dead", "replayed", "discarded"]


@dataclass(frozen=True, slots=True)
class DeadLetterRecord:
    """One dead letter as stored: the message, why it died, and what became of it."""

    id: str
    message: dict[str, Any]
    target: str
    message_type: str
    reason: str
    agent_id: str | None
    error: dict[str, Any] | None
    attempts: int
    task_id: str | None
    trace_id: str | None
    node_id: str | None
    status: str
    replayed_as: str | None
    settled_by: str | None
    settled_at: datetime | None
    created_at: datetime


def _record(row: Row[Any]) -> DeadLetterRecord:
    values: dict[str, Any] = dict(row._mapping)
    values["created_at"] = _aware(values["created_at"])
    values["settled_at"] = _aware(values["settled_at"])
    return DeadLetterRecord(**values)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class DeadLetterArchive:
    """The dead letters of a store: list, read, replay, discard."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list(
        self,
        *,
        status: Status | None = None,
        reason: str | None = None,
        agent_id: str | None = None,
        target: str | None = None,
        task_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[DeadLetterRecord]:
        """Dead letters, newest first, filtered by what is given."""
        query = select(dead_letters).order_by(dead_letters.c.created_at.desc(), dead_letters.c.id)
        for column, value in (
            (dead_letters.c.status, status),
            (dead_letters.c.reason, reason),
            (dead_letters.c.agent_id, agent_id),
            (dead_letters.c.target, target),
            (dead_letters.c.task_id, task_id),
        ):
            if value is not None:
                query = query.where(column == value)
        async with self.store.reading() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [_record(row) for row in rows]

    async def get(self, letter_id: str) -> DeadLetterRecord | None:
        async with self.store.reading() as conn:
            row = (
                await conn.execute(select(dead_letters).where(dead_letters.c.id == letter_id))
            ).first()
        return None if row is None else _record(row)

    async def replay(
        self, letter_id: str, by: str | None, *, owner: str | None, lease: float
    ) -> tuple[DeadLetterRecord, tuple[str, dict[str, Any]] | None]:
        """Send a copy of the letter's message (a new id) to its original address.

        Returns the letter as it is now and, when this call replayed it, the copy's outbox
        row (message id, message), held by `owner` for `lease` seconds, for its relay to send
        now (`StoreJournal.wake`); without an owner, the row is due at once for any node's
        relay (and no row is returned). A letter replayed before is returned as it is, with no
        row: replaying twice sends one copy. The letter's task, if it ended with it, is
        pending again, so the copy's handler ends it.

        Raises:
            UnknownDeadLetter: no such letter.
            DeadLetterSettled: the letter was discarded.
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        now = datetime.now(UTC)
        copy_id = new_id()
        async with self.store.writing() as conn:
            settled = (
                await conn.execute(
                    update(dead_letters)
                    .where(dead_letters.c.id == letter_id, dead_letters.c.status == "dead")
                    .values(status="replayed", replayed_as=copy_id, settled_by=by, settled_at=now)
                    .returning(dead_letters.c.message, dead_letters.c.task_id)
                )
            ).first()
            sent: tuple[str, dict[str, Any]] | None = None
            if settled is not None:
                stored, task_id = settled
                original = Message.from_dict(stored)
                copy = original.evolve(
                    id=copy_id,
                    created_at=now,
                    metadata={**original.metadata, REPLAY_OF_KEY: letter_id},
                ).to_dict()
                await conn.execute(
                    insert(outbox).values(
                        id=copy_id,
                        message=copy,
                        owner=owner,
                        available_at=now if owner is None else now + timedelta(seconds=lease),
                        attempts=0,
                        created_at=now,
                    )
                )
                if task_id is not None:
                    await conn.execute(
                        update(tasks)
                        .where(tasks.c.id == task_id, tasks.c.status == "dead_lettered")
                        .values(status="pending", result=None, error=None, finished_at=None)
                    )
                sent = None if owner is None else (copy_id, copy)
        letter = await self._settled(letter_id, "replayed")
        return letter, sent

    async def discard(self, letter_id: str, by: str | None) -> DeadLetterRecord:
        """Mark the letter discarded (kept as the record of it). Discarding twice is
        harmless.

        Raises:
            UnknownDeadLetter: no such letter.
            DeadLetterSettled: the letter was replayed.
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        async with self.store.writing() as conn:
            await conn.execute(
                update(dead_letters)
                .where(dead_letters.c.id == letter_id, dead_letters.c.status == "dead")
                .values(status="discarded", settled_by=by, settled_at=datetime.now(UTC))
            )
        return await self._settled(letter_id, "discarded")

    async def _settled(self, letter_id: str, wanted: Status) -> DeadLetterRecord:
        letter = await self.get(letter_id)
        if letter is None:
            raise UnknownDeadLetter(letter_id)
        if letter.status != wanted:
            raise DeadLetterSettled(letter_id, letter.status)
        return letter
