"""Store: the repository API over the database — agents, tasks, message audit, idempotency.

The runtime never opens sessions itself; it calls these methods (reads) or hands rows to the
`BatchWriter` (writes), which applies them with `Store.apply` in one transaction per batch.
Writes use SQLAlchemy Core multi-row statements: a batched insert is ~50x faster than
row-at-a-time ORM inserts, and the audit must keep up with the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Select, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mas.actors.budgets import Budget, Spent
from mas.actors.workflow import PARENT_KEY, StepRecord
from mas.errors import InvalidMessage, SchemaOutdated, StoreTimeout, StoreUnavailable
from mas.messages import Message
from mas.observability.outages import Outage
from mas.persistence import schema as migrations
from mas.persistence.batch_sql import BatchStatements, wake_upsert
from mas.persistence.engine import connect, display_url, error_reason, refused_data
from mas.persistence.models import (
    agents,
    messages,
    outbox,
    processed,
    task_signals,
    tasks,
    workflow_steps,
    workflow_waits,
)

__all__ = ["TRACE_LIMIT", "AgentRecord", "AuditedMessage", "Batch", "Store", "TaskRecord"]

_log = structlog.get_logger("mas.persistence")


FINAL_STATUSES = (
    "succeeded",
    "failed",
    "dead_lettered",
    "cancelled",
    "timed_out",
    "budget_exceeded",
)


@dataclass(frozen=True, slots=True)
class TaskRecord:
    id: str
    type: str
    status: str
    target: str | None
    payload: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    attempts: int
    created_by: str | None
    trace_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    parent_id: str | None = None
    deadline: datetime | None = None
    budget_tokens: int | None = None
    budget_cost: float | None = None
    spent_tokens: int = 0
    spent_cost: float = 0.0

    @property
    def done(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def budget(self) -> dict[str, Any] | None:
        """What its model calls (and its children's) may spend, if it has a budget."""
        if self.budget_tokens is None and self.budget_cost is None:
            return None
        return {"tokens": self.budget_tokens, "cost": self.budget_cost}

    @property
    def spent(self) -> dict[str, Any]:
        """What its model calls and its children's spent (counted under a budget)."""
        return {"tokens": self.spent_tokens, "cost": self.spent_cost}

    @classmethod
    def new(
        cls,
        task_id: str,
        task_type: str,
        payload: dict[str, Any],
        *,
        target: str | None = None,
        created_by: str | None = None,
        trace_id: str | None = None,
        parent_id: str | None = None,
        deadline: datetime | None = None,
        budget: Budget | None = None,
    ) -> TaskRecord:
        """A task as it is created: pending, no attempts yet."""
        return cls(
            id=task_id,
            type=task_type,
            status="pending",
            target=target,
            payload=payload,
            result=None,
            error=None,
            attempts=0,
            created_by=created_by,
            trace_id=trace_id,
            created_at=datetime.now(UTC),
            started_at=None,
            finished_at=None,
            parent_id=parent_id,
            deadline=deadline,
            budget_tokens=None if budget is None else budget.tokens,
            budget_cost=None if budget is None else budget.cost,
        )

    def row(self) -> dict[str, Any]:
        """The task as a `tasks` row."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class AgentRecord:
    id: str
    type: str
    status: str
    node_id: str | None
    last_heartbeat: datetime | None
    metadata: dict[str, Any]
    created_at: datetime

    def live(self, stale_after: float) -> bool:
        """Running, and its node's heartbeat is younger than `stale_after` seconds."""
        beat = self.last_heartbeat
        return (
            self.status == "running"
            and beat is not None
            and (datetime.now(UTC) - beat).total_seconds() <= stale_after
        )


@dataclass(frozen=True, slots=True)
class AuditedMessage:
    """A message as the audit recorded it (a `messages` row), with the agent that handled it.

    The row's fields as they are, not a `Message`: a reader that shows the audit must not
    fail on a row the `Message` constructor would refuse (one written by another version).
    """

    id: str
    type: str
    sender: str | None
    target: str | None
    payload: Any
    metadata: Any
    trace_id: str | None
    correlation_id: str | None
    reply_to: str | None
    created_at: datetime
    handled_by: str | None
    """The agent that handled it, when the audit recorded that (`MAS_AUDIT=all`, not a
    topic message); None when it was not handled, or not recorded as handled."""

    @property
    def task_id(self) -> str | None:
        """The task it is the work of, as `mas.actors.workflow.task_of` reads a `Message`:
        its `task_id`, or, for a message a workflow step sent (a child task), its own id."""
        metadata = self.metadata if isinstance(self.metadata, dict) else {}
        task_id = metadata.get("task_id")
        if task_id is None and PARENT_KEY in metadata:
            return self.id
        return task_id if isinstance(task_id, str) else None


TRACE_LIMIT = 500
"""The most audited messages of one trace `Store.trace_log` reads at a time."""


@dataclass
class Batch:
    """Rows waiting to be written together; applied kind by kind in this field order.

    Tasks are created first, so a task created and finished while one batch gathered is
    written whole in one commit. `outbox` rows (keyed by message id) go in with the decision
    to send them; `sent` deletes them once the message is on its way. A row written and
    sent within one batch is never written at all (`Batch.sent_one`).
    """

    created: list[dict[str, Any]] = field(default_factory=list)
    outbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    agents: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    processed: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    running: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    completed: list[dict[str, Any]] = field(default_factory=list)
    """Child tasks whose handler ended without a TaskResult: succeeded, unless already ended."""
    sent: list[dict[str, Any]] = field(default_factory=list)
    wakes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Parked handlers' wake-ups (outbox rows, keyed by message id) that replace any row of
    their message: applied last, after the deletes of rows sent."""
    answered: list[str] = field(default_factory=list)
    """Parked handlers (their message ids) whose asks this batch answered: no row; their
    wake-ups are sent once it is committed (`OutboxRelay.wake_parked`)."""
    asking: dict[str, list[str]] = field(default_factory=dict)
    """Handlers this batch parks on asks (message id: the asks' message ids): no row; once
    it is committed, those already answered are woken (`OutboxRelay.wake_if_answered`)."""

    def __len__(self) -> int:
        return (
            len(self.created)
            + len(self.outbox)
            + len(self.agents)
            + len(self.messages)
            + len(self.steps)
            + len(self.processed)
            + len(self.dead_letters)
            + len(self.running)
            + len(self.finished)
            + len(self.completed)
            + len(self.sent)
            + len(self.wakes)
            + len(self.answered)
            + len(self.asking)
        )

    def extend(self, other: Batch) -> None:
        self.created.extend(other.created)
        self.outbox.update(other.outbox)
        self.agents.extend(other.agents)
        self.messages.extend(other.messages)
        self.steps.extend(other.steps)
        self.processed.extend(other.processed)
        self.dead_letters.extend(other.dead_letters)
        self.running.extend(other.running)
        self.finished.extend(other.finished)
        self.completed.extend(other.completed)
        self.sent.extend(other.sent)
        self.wakes.update(other.wakes)
        self.answered.extend(other.answered)
        self.asking.update(other.asking)

    def sent_one(self, message_id: str, owner: str | None) -> None:
        """The outbox row of `message_id` is no longer needed: drop it from this batch if it
        is still here (nothing to write), else delete it with this batch — if `owner` still
        holds it: a row another node claimed since, or a parked handler's wake-up that took
        the message's row over (`Store.park`), is not this node's to delete."""
        if self.outbox.pop(message_id, None) is None:
            self.sent.append({"id": message_id, "owner": owner})


def message_row(
    message: Message, handled_by: str | None = None, reply: Message | None = None
) -> dict[str, Any]:
    return {
        "id": message.id,
        "msg_type": message.type,
        "sender": message.sender,
        "target": message.target,
        "payload": message.payload,
        "metadata": message.metadata,
        "trace_id": message.trace_id,
        "correlation_id": message.correlation_id,
        "reply_to": message.reply_to,
        "created_at": message.created_at,
        "handled_by": handled_by,
        "reply": reply.to_dict() if reply is not None else None,
    }


def message_from_row(row: Any) -> Message:
    return Message(
        row.msg_type,
        row.payload,
        id=row.id,
        sender=row.sender,
        target=row.target,
        created_at=_aware(row.created_at),
        metadata=row.metadata or {},
        trace_id=row.trace_id,
        reply_to=row.reply_to,
        correlation_id=row.correlation_id,
    )


class Store:
    """Repositories over one async engine (SQLite or PostgreSQL)."""

    def __init__(
        self,
        engine: AsyncEngine,
        schema: str | None = None,
        *,
        timeout: float = 10.0,
        outbox_lease: float = 10.0,
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.timeout = timeout
        """Seconds one database call may take (the engine's drivers enforce it)."""
        self.outbox_lease = outbox_lease
        """Seconds an outbox row stays its writer's after the write (`_stamp_outbox`)."""
        self.outage = Outage("database", "store")
        """Logs once when the database stops answering, once when it is back."""
        self.dialect = engine.dialect.name
        self.url = display_url(engine.url)
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._batch_sql = BatchStatements(engine.dialect)
        self._task_by_id = str(
            select(tasks).where(tasks.c.id == bindparam("id")).compile(dialect=engine.dialect)
        )

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        schema: str | None = None,
        migrate: bool | None = None,
        timeout: float = 10.0,
        outbox_lease: float = 10.0,
    ) -> Store:
        """Connect, migrate (default for SQLite), then check that this mas runs on the schema.

        `timeout` bounds every database call: connecting, waiting for a pooled connection,
        each statement.

        Raises:
            StoreUnavailable: the database cannot be reached.
            SchemaOutdated: this mas does not run on the schema (see `check_schema`).
        """
        engine = await connect(url, schema=schema, timeout=timeout)
        store = cls(engine, schema, timeout=timeout, outbox_lease=outbox_lease)
        try:
            if migrate if migrate is not None else store.dialect == "sqlite":
                await store.migrate()
            await store.check_schema()
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self, timeout: float) -> None:
        """One trivial query within `timeout` seconds (readiness checks).

        Raises:
            StoreTimeout: no answer within `timeout`.
            StoreUnavailable: the database refused, or is unreachable.
        """
        async with (
            self._mapped("pinging", timeout),
            asyncio.timeout(timeout),
            self.engine.connect() as conn,
        ):
            await conn.execute(text("SELECT 1"))

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reads; the database's failures become `StoreUnavailable`.

        Raises:
            StoreTimeout: the database did not answer within `timeout` (a blackhole, a
                lock held too long, every pooled connection busy).
            StoreUnavailable: it refused, or the connection broke.
        """
        async with self._mapped("reading from"), self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def writing(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed when the block ends (see `reading`)."""
        async with self._mapped("writing to"), self.engine.begin() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def _mapped(self, doing: str, timeout: float | None = None) -> AsyncIterator[None]:
        """The one place where the drivers' errors become mas's (no SQL, no parameters).

        Every method that touches the database runs inside it (through `reading`, `writing`
        or directly), so no caller ever sees a SQLAlchemy, asyncpg or sqlite3 exception.
        `timeout`: the bound the block runs under, when not the Store's own.
        """
        try:
            yield
        except (TimeoutError, PoolTimeout) as exc:
            self.outage.failed(doing, exc)
            raise StoreTimeout(
                f"{doing} the database at {self.url}: no answer within "
                f"{self.timeout if timeout is None else timeout:g}s"
            ) from exc
        except (OSError, SQLAlchemyError, sqlite3.Error) as exc:
            if not refused_data(exc):  # a value it refused says nothing about its health
                self.outage.failed(doing, exc)
            raise StoreUnavailable(
                f"{doing} the database at {self.url} failed: {error_reason(exc)}"
            ) from exc
        self.outage.ok()

    # -- schema ------------------------------------------------------------------------------

    async def migrate(self) -> None:
        """Upgrade the schema to this mas's revision.

        Raises:
            StoreTimeout, StoreUnavailable: as `writing`.
        """
        async with self._mapped("migrating"):
            await migrations.upgrade(self.engine, self.schema)

    async def revision(self) -> str | None:
        """The schema revision the database is at (None for an empty database).

        Raises:
            StoreTimeout, StoreUnavailable: as `reading`.
        """
        async with self._mapped("reading the revision of"):
            return await migrations.current_revision(self.engine, self.schema)

    async def check_schema(self) -> None:
        """Fail unless this mas runs on the database's schema: at its own revision, or at a
        newer one whose migrations all let older code run down to this one's (a rolling
        upgrade migrated the database while this release's pods still run and restart).

        Raises:
            SchemaOutdated: the database is behind this mas's revision, or ahead of it in a
                way this release cannot run on.
            StoreTimeout, StoreUnavailable: as `reading`.
        """
        current, head = await self.revision(), migrations.head_revision()
        if current == head:
            return
        async with self._mapped("reading the revision of"):
            floor = await migrations.recorded_floor(self.engine, self.schema)
        fit = migrations.fit(current, floor)
        if fit == "behind":
            raise SchemaOutdated(
                f"the database at {self.url} is at schema revision {current or 'none'}, "
                f"this mas needs {head}: run `mas db upgrade`"
            )
        if fit == "too_new":
            raise SchemaOutdated(
                f"the database at {self.url} is at schema revision {current}, newer than "
                f"this mas's {head}, and runs mas from revision {floor or 'unknown'} on: "
                "upgrade mas"
            )
        _log.warning("schema_ahead", database=self.url, revision=current, ours=head, oldest=floor)

    # -- batched writes (the runtime's journal) ----------------------------------------------

    async def apply(self, batch: Batch) -> None:
        """Write a batch in one transaction (nothing of it is visible unless all is).

        Raises:
            StoreUnavailable: the database is unreachable or refused the transaction.
        """
        if batch.outbox:
            self._stamp_outbox(batch.outbox.values())
        statements = self._batch_sql.for_batch(batch)
        if not statements:
            return  # nothing to write (`Batch.answered` alone)
        if self.dialect == "sqlite":
            await self._apply_sqlite(statements)
        else:
            async with self.writing() as conn:
                for sql, params in statements:
                    await conn.exec_driver_sql(sql, params)

    async def _apply_sqlite(self, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
        """Straight on aiosqlite's connection: one hop to its thread per statement.

        The `sqlite3` module opens the transaction before the first write; the commit is
        ours, and so is the rollback when a statement fails.
        """
        async with self._sqlite_driver() as driver:
            try:
                for sql, params in statements:
                    await driver.executemany(sql, params)
                await driver.commit()
            except BaseException:
                await driver.rollback()
                raise

    @contextlib.asynccontextmanager
    async def _sqlite_driver(self) -> AsyncIterator[Any]:
        """aiosqlite's connection, held from the pool (of one: SQLite has one writer)."""
        async with self.reading() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            yield driver

    def _stamp_outbox(self, rows: Iterable[dict[str, Any]]) -> None:
        """Start the lease of outbox rows about to be written: from now, not from when they
        were made (a commit that waited for the database must not hand its rows to other
        nodes' relays the moment it lands). The write may take `timeout` itself."""
        until = datetime.now(UTC) + timedelta(seconds=self.outbox_lease + self.timeout)
        for row in rows:
            row["available_at"] = until

    # -- tasks -------------------------------------------------------------------------------

    async def create_task(
        self,
        task_id: str,
        task_type: str,
        payload: dict[str, Any],
        *,
        target: str | None = None,
        created_by: str | None = None,
        trace_id: str | None = None,
        deadline: datetime | None = None,
        budget: Budget | None = None,
        send: dict[str, Any] | None = None,
    ) -> tuple[TaskRecord, bool]:
        """Create a pending task; returns (task, created). An existing id returns the task.

        `send`: an outbox row written in the same transaction when the task is created (the
        task's message, handed over after the commit; see `mas.persistence.outbox`).

        Raises:
            InvalidMessage: the payload cannot be stored (for example NUL characters on
                PostgreSQL).
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        self.check_storable(payload, "payload")
        record = TaskRecord.new(
            task_id,
            task_type,
            payload,
            target=target,
            created_by=created_by,
            trace_id=trace_id,
            deadline=deadline,
            budget=budget,
        )
        async with self.writing() as conn:
            result = await conn.execute(
                self._insert(tasks).on_conflict_do_nothing().returning(tasks.c.id),
                [record.row()],
            )
            created = result.first() is not None
            if created and send is not None:
                self._stamp_outbox((send,))
                await conn.execute(outbox.insert(), [send])
        if created:
            return record, True  # what was just written: no need to read it back
        task = await self.get_task(task_id)
        assert task is not None
        return task, created

    async def get_task(self, task_id: str) -> TaskRecord | None:
        if self.dialect == "sqlite":
            return await self._get_task_sqlite(task_id)
        async with self.reading() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
        return _task(row) if row is not None else None

    async def _get_task_sqlite(self, task_id: str) -> TaskRecord | None:
        """Straight on aiosqlite's connection: one hop to its thread, not five.

        Through SQLAlchemy a read takes a cursor, executes, fetches, closes the cursor and
        rolls back, each a hop to aiosqlite's thread; `execute_fetchall` does it in one
        (a `?wait` request reads its task, so this is on the gateway's hot path).

        Raises:
            StoreUnavailable: SQLite refused the read (503 at the API, like other reads).
        """
        async with self._sqlite_driver() as driver:
            rows = list(await driver.execute_fetchall(self._task_by_id, (task_id,)))
        return _task_from_sqlite(rows[0]) if rows else None

    async def list_tasks(
        self,
        *,
        status: str | None = None,
        task_type: str | None = None,
        created_by: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Tasks, newest first; filtered by status, type, creator and parent when given."""
        query = select(tasks).order_by(tasks.c.created_at.desc(), tasks.c.id)
        if parent_id is not None:
            query = query.where(tasks.c.parent_id == parent_id)
        if status is not None:
            query = query.where(tasks.c.status == status)
        if task_type is not None:
            query = query.where(tasks.c.type == task_type)
        if created_by is not None:
            query = query.where(tasks.c.created_by == created_by)
        async with self.reading() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [_task(row) for row in rows]

    async def task_statuses(self, task_ids: Iterable[str]) -> dict[str, str]:
        """The status of each of these tasks that exists, in one query per 500 ids.

        For the gateway's one shared poll of the tasks its event streams watch: a read for
        all of them, not one per stream.
        """
        ids = list(task_ids)
        statuses: dict[str, str] = {}
        async with self.reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = select(tasks.c.id, tasks.c.status).where(tasks.c.id.in_(chunk))
                for task_id, status in (await conn.execute(query)).all():
                    statuses[str(task_id)] = str(status)
        return statuses

    async def task_owners(self, task_ids: Iterable[str]) -> dict[str, str | None]:
        """Who created each of these tasks that exists (`created_by`), in one query per 500
        ids: whose tasks the messages of a trace belong to."""
        ids = list(task_ids)
        owners: dict[str, str | None] = {}
        async with self.reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                query = select(tasks.c.id, tasks.c.created_by).where(tasks.c.id.in_(chunk))
                for task_id, created_by in (await conn.execute(query)).all():
                    owners[str(task_id)] = None if created_by is None else str(created_by)
        return owners

    async def prune(
        self, before: datetime, *, audit: bool = False, tasks_too: bool = False
    ) -> dict[str, int]:
        """Delete records older than `before`; returns how many rows went, per table.

        Always: idempotency marks (`processed_messages`). A message id older than that is no
        longer recognised as a duplicate, so keep more than any redelivery can lag. With
        `audit`, audited messages too (which also serve as marks when MAS_AUDIT=all); with
        `tasks_too`, finished tasks. Running and pending tasks are never deleted.
        """
        statements = {
            "processed_messages": delete(processed).where(processed.c.processed_at < before)
        }
        if audit:
            statements["messages"] = delete(messages).where(messages.c.created_at < before)
        if tasks_too:
            statements["tasks"] = delete(tasks).where(
                tasks.c.created_at < before, tasks.c.status.in_(sorted(FINAL_STATUSES))
            )
        counts: dict[str, int] = {}
        async with self.writing() as conn:
            for table, statement in statements.items():
                counts[table] = int((await conn.execute(statement)).rowcount or 0)
        return counts

    async def count_tasks(self, *, created_by: str | None = None) -> dict[str, int]:
        """How many tasks are in each status (for the dashboard), of one creator if given."""
        query = select(tasks.c.status, func.count()).group_by(tasks.c.status)
        if created_by is not None:
            query = query.where(tasks.c.created_by == created_by)
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return {str(status): int(count) for status, count in rows}

    async def trace_tasks(self, trace_id: str) -> list[TaskRecord]:
        """The tasks of a trace, oldest first."""
        query = select(tasks).where(tasks.c.trace_id == trace_id).order_by(tasks.c.created_at)
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [_task(row) for row in rows]

    async def cancel_task(self, task_id: str) -> TaskRecord | None:
        """Cancel a task that has not finished; returns it as it is now (None if unknown).

        Its message is taken out of the outbox in the same transaction: if it was not sent
        yet, it never will be.
        """
        now = datetime.now(UTC)
        async with self.writing() as conn:
            cancelled = await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .where(tasks.c.status.in_(("pending", "running")))
                .values(status="cancelled", finished_at=now)
            )
            if cancelled.rowcount:
                await conn.execute(delete(outbox).where(outbox.c.id == task_id))
                await self._end_descendants(conn, [task_id], {"status": "cancelled"}, now)
        return await self.get_task(task_id)

    async def time_out_due(self, now: datetime, *, limit: int = 500) -> list[str]:
        """End `timed_out` the unfinished tasks whose deadline has passed, with what their
        workflows started, and drop their unsent messages (a parked handler's wake-up
        among them); returns the tasks' ids (descendants included). Any node may run it:
        a task ends once.

        Raises:
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        due = (
            select(tasks.c.id)
            .where(tasks.c.deadline <= now, tasks.c.status.in_(("pending", "running")))
            .limit(limit)
        )
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        async with self.writing() as conn:
            ended = await conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(due.scalar_subquery()))
                .values(**_timed_out(now), finished_at=now)
                .returning(tasks.c.id)
            )
            ids = [row[0] for row in ended]
            if not ids:
                return []
            await conn.execute(delete(outbox).where(outbox.c.id.in_(ids)))
            ids += await self._end_descendants(conn, ids, _timed_out(now), now)
        return ids

    async def _end_descendants(
        self, conn: AsyncConnection, parents: list[str], values: dict[str, Any], now: datetime
    ) -> list[str]:
        """End (cancelled, timed out) the unfinished tasks these tasks' workflows started,
        and theirs (their handlers find out as a cancelled task's do), and drop their
        unsent messages; returns their ids."""
        ended: list[str] = []
        while parents:
            children = await conn.execute(
                update(tasks)
                .where(tasks.c.parent_id.in_(parents))
                .where(tasks.c.status.in_(("pending", "running")))
                .values(**values, finished_at=now)
                .returning(tasks.c.id)
            )
            parents = [row[0] for row in children]
            if parents:
                await conn.execute(delete(outbox).where(outbox.c.id.in_(parents)))
                ended += parents
        return ended

    async def charge(
        self, task_id: str, budget: Budget, tokens: int, cost: float
    ) -> tuple[Spent, list[str]] | None:
        """Count `tokens` and `cost` a model call spent for the task (nothing: only ask what
        is left), in one transaction with what follows: when the count is past `budget`
        (before a call: at it), the task, if it has not ended, ends `budget_exceeded` with
        the tasks its workflow started, and their unsent messages are dropped. Returns what
        it has spent and the ids that ended (none if it had ended already); None for an
        unknown task.

        Raises:
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        now = datetime.now(UTC)
        async with self.writing() as conn:
            counted = (
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.id == task_id)
                    .values(
                        spent_tokens=func.coalesce(tasks.c.spent_tokens, 0) + tokens,
                        spent_cost=func.coalesce(tasks.c.spent_cost, 0.0) + cost,
                    )
                    .returning(tasks.c.spent_tokens, tasks.c.spent_cost, tasks.c.status)
                )
            ).first()
            if counted is None:
                return None
            spent_tokens, spent_cost, status = counted
            asking = tokens == 0 and cost == 0
            if not budget.crossed(spent_tokens, spent_cost, asking=asking):
                return Spent(spent_tokens, spent_cost, exceeded=False), []
            ended: list[str] = []
            if status in ("pending", "running"):
                over = _over_budget(budget, spent_tokens, spent_cost)
                await conn.execute(
                    update(tasks).where(tasks.c.id == task_id).values(**over, finished_at=now)
                )
                await conn.execute(delete(outbox).where(outbox.c.id == task_id))
                ended = [task_id, *await self._end_descendants(conn, [task_id], over, now)]
        return Spent(spent_tokens, spent_cost, exceeded=True), ended

    async def task_steps(self, task_id: str) -> list[dict[str, Any]]:
        """The durable steps recorded for the task's message, in order (every handler's)."""
        query = (
            select(
                workflow_steps.c.seq,
                workflow_steps.c.name,
                workflow_steps.c.kind,
                workflow_steps.c.handler,
                workflow_steps.c.agent_id,
                workflow_steps.c.finished_at,
                workflow_steps.c.result,
            )
            .where(workflow_steps.c.message_id == task_id)
            .order_by(workflow_steps.c.handler, workflow_steps.c.seq)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [{**row._asdict(), "finished_at": _aware(row.finished_at)} for row in rows]

    async def cancelled_among(self, task_ids: Iterable[str]) -> list[str]:
        """Which of these tasks were cancelled, timed out or went over their budget (their
        work is not wanted)."""
        query = select(tasks.c.id).where(
            tasks.c.id.in_(list(task_ids)),
            tasks.c.status.in_(("cancelled", "timed_out", "budget_exceeded")),
        )
        async with self.reading() as conn:
            return [row[0] for row in await conn.execute(query)]

    # -- signals -----------------------------------------------------------------------------

    async def send_signal(
        self,
        task_id: str,
        name: str,
        payload: Any,
        sent_by: str | None,
        *,
        owner: str | None = None,
        lease_until: datetime | None = None,
    ) -> tuple[TaskRecord | None, bool, list[tuple[str, dict[str, Any]]]]:
        """Keep signal `name` for a task that has not ended; returns (the task as it is,
        whether this signal was stored, the wake-ups it claimed). An unknown task is None; a
        task that ended, or a name already signalled, stores nothing (the first signal of
        a name counts).

        In the same transaction, handlers parked waiting for this signal (`park`) are woken:
        their wake-ups (outbox rows) become `owner`'s until `lease_until`, to be sent now
        (message id, message pairs). Without an owner they are only made due, for any
        node's relay to send.

        Raises:
            InvalidMessage: the payload cannot be stored (NUL characters on PostgreSQL).
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        self.check_storable(payload, "signal payload")
        task = await self.get_task(task_id)
        if task is None or task.done:
            return task, False, []
        now = datetime.now(UTC)
        row = {"task_id": task_id, "name": name, "payload": payload, "sent_by": sent_by}
        woken: list[tuple[str, dict[str, Any]]] = []
        async with self.writing() as conn:
            await self._lock_tasks(conn, [task_id])
            result = await conn.execute(
                self._insert(task_signals)
                .on_conflict_do_nothing()
                .returning(task_signals.c.task_id),
                [{**row, "sent_at": now}],
            )
            stored = result.first() is not None
            if stored:
                waiting = await conn.execute(
                    delete(workflow_waits)
                    .where(workflow_waits.c.task_id == task_id, workflow_waits.c.name == name)
                    .returning(workflow_waits.c.message_id)
                )
                ids = [message_id for (message_id,) in waiting]
                if ids:
                    # Only a wake-up no relay has claimed: a claimed one is being sent.
                    wake = (
                        update(outbox)
                        .where(outbox.c.id.in_(ids), outbox.c.owner.is_(None))
                        .values(owner=owner, available_at=lease_until or now)
                        .returning(outbox.c.id, outbox.c.message)
                    )
                    woken = [(row[0], row[1]) for row in await conn.execute(wake)]
        return task, stored, woken if owner is not None else []

    async def signal(self, task_id: str, name: str, until: datetime) -> tuple[bool, Any]:
        """(True, its payload) once signal `name` was sent to the task no later than
        `until`, else (False, None)."""
        async with self.reading() as conn:
            row = (await conn.execute(_signal_sent(task_id, name, until))).first()
        return (False, None) if row is None else (True, row[0])

    async def park(
        self,
        wake: dict[str, Any],
        waits: list[tuple[str, str, datetime]],
    ) -> bool:
        """Keep a parked handler's wake-up: its message as the outbox row `wake` (due at the
        first wait's end, held by no node, replacing any row of that message), and a row per
        awaited signal ((task id, name, deadline)). Returns True when one of those signals
        had been sent already: the wake-up is then due at once.

        One transaction, which locks the tasks first as `send_signal` does: a signal sent
        meanwhile is either committed before (and read here) or finds the wait rows.

        Raises:
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        message_id = wake["id"]
        async with self.writing() as conn:
            await self._lock_tasks(conn, sorted({task_id for task_id, _, _ in waits}))
            signalled = False
            if waits:
                await conn.execute(
                    self._insert(workflow_waits).on_conflict_do_nothing(),
                    [
                        {"task_id": task_id, "name": name, "message_id": message_id}
                        for task_id, name, _ in waits
                    ],
                )
                for task_id, name, until in waits:
                    if (await conn.execute(_signal_sent(task_id, name, until))).first():
                        signalled = True
                        break
            if signalled:
                wake = {**wake, "available_at": datetime.now(UTC)}
            await conn.execute(wake_upsert(self._insert), [{**wake, "owner": None}])
        return signalled

    async def _lock_tasks(self, conn: AsyncConnection, task_ids: list[str]) -> None:
        """Lock these tasks' rows until the transaction ends (PostgreSQL; SQLite has one
        writer at a time, taken by the transaction's first write)."""
        if task_ids and self.dialect == "postgresql":
            await conn.execute(select(tasks.c.id).where(tasks.c.id.in_(task_ids)).with_for_update())

    # -- the outbox (see mas.persistence.outbox) ---------------------------------------------

    async def claim_outbox(
        self, owner: str, now: datetime, until: datetime, *, limit: int = 100
    ) -> list[tuple[str, dict[str, Any]]]:
        """Take up to `limit` outbox rows whose lease ran out: they are `owner`'s until
        `until`. Returns (message id, message) pairs, oldest first.

        On PostgreSQL, rows another relay is claiming at the same moment are skipped.

        Raises:
            StoreUnavailable: the database cannot be reached or refused the claim.
        """
        due = (
            select(outbox.c.id)
            .where(outbox.c.available_at <= now)
            .order_by(outbox.c.available_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        claim = (
            update(outbox)
            .where(outbox.c.id.in_(due.scalar_subquery()))
            .values(owner=owner, available_at=until, attempts=outbox.c.attempts + 1)
            .returning(outbox.c.id, outbox.c.message, outbox.c.created_at)
        )
        async with self.writing() as conn:
            rows = list((await conn.execute(claim)).all())
        rows.sort(key=lambda row: _aware(row[2]) or now)
        return [(row[0], row[1]) for row in rows]

    async def renew_outbox(self, owner: str, until: datetime) -> int:
        """Extend the lease of every outbox row `owner` holds to `until`; returns how many.

        Raises:
            StoreUnavailable: the database cannot be reached or refused the update.
        """
        async with self.writing() as conn:
            result = await conn.execute(
                update(outbox).where(outbox.c.owner == owner).values(available_at=until)
            )
        return int(result.rowcount or 0)

    async def delay_outbox(self, message_id: str, owner: str, until: datetime) -> bool:
        """Make `owner`'s row of `message_id` due again at `until`, for any node's relay;
        False when `owner` no longer holds it.

        Raises:
            StoreUnavailable: the database cannot be reached or refused the update.
        """
        async with self.writing() as conn:
            result = await conn.execute(
                update(outbox)
                .where(outbox.c.id == message_id, outbox.c.owner == owner)
                .values(owner=None, available_at=until)
            )
        return bool(result.rowcount)

    async def wake_parked(
        self, message_ids: list[str], owner: str, lease_until: datetime
    ) -> list[tuple[str, dict[str, Any]]]:
        """Claim the wake-ups (outbox rows held by no node) of these parked handlers for
        `owner` until `lease_until`, to be sent now: (message id, message) pairs. A message
        with no such row (not parked, or its wake-up already claimed) is left alone.

        Raises:
            StoreUnavailable: the database cannot be reached or refused the update.
        """
        claimed: list[tuple[str, dict[str, Any]]] = []
        ids = sorted(set(message_ids))
        async with self.writing() as conn:
            for start in range(0, len(ids), 500):
                wake = (
                    update(outbox)
                    .where(outbox.c.id.in_(ids[start : start + 500]), outbox.c.owner.is_(None))
                    .values(owner=owner, available_at=lease_until)
                    .returning(outbox.c.id, outbox.c.message)
                )
                claimed.extend((row[0], row[1]) for row in await conn.execute(wake))
        return claimed

    async def outbox_ids(self) -> list[str]:
        """The message ids in the outbox (not yet on their way), for status pages and tests."""
        async with self.reading() as conn:
            rows = (await conn.execute(select(outbox.c.id).order_by(outbox.c.created_at))).all()
        return [row[0] for row in rows]

    # -- agents ------------------------------------------------------------------------------

    async def get_agent(self, agent_id: str) -> AgentRecord | None:
        async with self.reading() as conn:
            row = (await conn.execute(select(agents).where(agents.c.id == agent_id))).first()
        return _agent(row) if row is not None else None

    async def agents_to_retire(self, before: datetime, *, limit: int = 50) -> list[AgentRecord]:
        """Agents gone since before `before`: stopped then, or running with a heartbeat that
        stopped then (their node was lost). Oldest first."""
        query = (
            select(agents)
            .where(agents.c.status.in_(("running", "stopped")))
            .where(agents.c.last_heartbeat < before)
            .order_by(agents.c.last_heartbeat)
            .limit(limit)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [_agent(row) for row in rows]

    async def mark_retired(self, agent: AgentRecord, reason: str) -> bool:
        """Record that `agent` (as read) is gone for good and its queue removed; False when
        its row changed since it was read (it started again meanwhile)."""
        metadata = {**agent.metadata, "stop_reason": agent.metadata.get("stop_reason", reason)}
        async with self.writing() as conn:
            result = await conn.execute(
                update(agents)
                .where(agents.c.id == agent.id)
                .where(agents.c.status == agent.status)
                .where(agents.c.last_heartbeat == agent.last_heartbeat)
                .values(status="retired", metadata=metadata)
            )
        return bool(result.rowcount)

    async def touch_agents(self, node_id: str) -> int:
        """Heartbeat: the running agents of `node_id` are alive now; returns how many."""
        async with self.writing() as conn:
            result = await conn.execute(
                update(agents)
                .where(agents.c.node_id == node_id, agents.c.status == "running")
                .values(last_heartbeat=datetime.now(UTC))
            )
        return int(result.rowcount or 0)

    async def list_agents(
        self,
        *,
        agent_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[AgentRecord]:
        query = select(agents).order_by(agents.c.created_at, agents.c.id)
        if agent_type is not None:
            query = query.where(agents.c.type == agent_type)
        if status is not None:
            query = query.where(agents.c.status == status)
        async with self.reading() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).all()
        return [_agent(row) for row in rows]

    async def live_capabilities(self, stale_after: float) -> dict[str, tuple[str, ...]]:
        """The agent types running anywhere in the cluster, each with the capabilities its
        agents declare: those running whose node's heartbeat is younger than `stale_after`
        seconds (as `AgentRecord.live` judges one agent).

        One row per type is read (agents of a type share their class's capabilities), so the
        answer stays small however many agents run.
        """
        fresh_since = datetime.now(UTC) - timedelta(seconds=stale_after)
        live = (agents.c.status == "running") & (agents.c.last_heartbeat >= fresh_since)
        first = (
            select(agents.c.type, func.min(agents.c.id).label("id"))
            .where(live)
            .group_by(agents.c.type)
            .subquery()
        )
        query = select(agents.c.type, agents.c.metadata).join(first, agents.c.id == first.c.id)
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return {
            row.type: tuple(str(name) for name in (row.metadata or {}).get("capabilities", ()))
            for row in rows
        }

    # -- messages ----------------------------------------------------------------------------

    async def trace(self, trace_id: str) -> list[Message]:
        """Every audited message of a trace, oldest first."""
        query = (
            select(messages)
            .where(messages.c.trace_id == trace_id)
            .order_by(messages.c.created_at, messages.c.id)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [message_from_row(row) for row in rows]

    async def trace_log(
        self, trace_id: str, *, limit: int = TRACE_LIMIT
    ) -> tuple[list[AuditedMessage], bool]:
        """The oldest `limit` audited messages of a trace (at most `TRACE_LIMIT`), oldest
        first, each with the agent that handled it; and whether the trace has more.

        Bounded, unlike `trace` (which a replay needs whole): an operator's page reads this,
        and a trace that fans out to thousands of tasks must not make one answer huge.

        Raises:
            ValueError: `limit` is not between 1 and `TRACE_LIMIT`.
        """
        if not 1 <= limit <= TRACE_LIMIT:
            raise ValueError(f"limit must be between 1 and {TRACE_LIMIT}, got {limit}")
        query = (
            select(messages)
            .where(messages.c.trace_id == trace_id)
            .order_by(messages.c.created_at, messages.c.id)
            .limit(limit + 1)  # one more: whether the trace goes on
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [_audited(row) for row in rows[:limit]], len(rows) > limit

    async def trace_handlers(self, trace_id: str) -> list[str]:
        """The agents that handled a message of the trace (by id, sorted): those a message to
        a `type:` address reached are named nowhere else."""
        query = (
            select(messages.c.handled_by)
            .where(messages.c.trace_id == trace_id, messages.c.handled_by.is_not(None))
            .distinct()
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return sorted(str(row[0]) for row in rows)

    async def agent_messages(self, agent_id: str, *, limit: int = 100) -> list[Message]:
        """What an agent received and sent, newest first."""
        address = f"agent:{agent_id}"
        query = (
            select(messages)
            .where(or_(messages.c.handled_by == agent_id, messages.c.sender == address))
            .order_by(messages.c.created_at.desc(), messages.c.id)
            .limit(limit)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [message_from_row(row) for row in rows]

    async def count(self, table: str) -> int:
        target = {"agents": agents, "tasks": tasks, "messages": messages, "outbox": outbox}.get(
            table, processed
        )
        async with self.reading() as conn:
            return int((await conn.execute(select(func.count()).select_from(target))).scalar_one())

    async def handled_count(self) -> int:
        """Idempotency records: processed ids plus audited messages that name their handler."""
        async with self.reading() as conn:
            marks = (await conn.execute(select(func.count()).select_from(processed))).scalar_one()
            audited = (
                await conn.execute(
                    select(func.count())
                    .select_from(messages)
                    .where(messages.c.handled_by.is_not(None))
                )
            ).scalar_one()
        return int(marks) + int(audited)

    # -- idempotency -------------------------------------------------------------------------

    async def recent_processed(self, agent_id: str, limit: int) -> list[tuple[str, Message | None]]:
        """The newest `limit` message ids this agent handled, oldest first, with replies.

        Handled messages are recorded in the audit (`messages.handled_by`) or, when the
        audit does not cover them, in `processed_messages`: both are read.
        """
        marks = (
            select(processed.c.message_id, processed.c.reply, processed.c.processed_at)
            .where(processed.c.agent_id == agent_id)
            .order_by(processed.c.id.desc())
            .limit(limit)
        )
        audited = (
            select(messages.c.id, messages.c.reply, messages.c.created_at)
            .where(messages.c.handled_by == agent_id)
            .order_by(messages.c.created_at.desc())
            .limit(limit)
        )
        async with self.reading() as conn:
            rows = [*(await conn.execute(marks)).all(), *(await conn.execute(audited)).all()]
        rows.sort(key=lambda row: _aware(row[2]) or datetime.min.replace(tzinfo=UTC))
        return [(row[0], Message.from_dict(row[1]) if row[1] else None) for row in rows[-limit:]]

    async def processed_reply(self, message_id: str) -> tuple[bool, Message | None]:
        """Whether any agent handled `message_id`, and the reply it stored if one."""
        queries = (
            select(messages.c.reply).where(
                messages.c.id == message_id, messages.c.handled_by.is_not(None)
            ),
            select(processed.c.reply).where(processed.c.message_id == message_id).limit(1),
        )
        async with self.reading() as conn:
            for query in queries:
                row = (await conn.execute(query)).first()
                if row is not None:
                    return True, Message.from_dict(row[0]) if row[0] else None
        return False, None

    async def replies_among(self, message_ids: list[str]) -> dict[str, Message]:
        """The replies stored for those of these messages an agent answered, by id (one
        query per table and 500 ids): what the asks a parked handler waited for got."""
        replies: dict[str, Message] = {}
        async with self.reading() as conn:
            for start in range(0, len(message_ids), 500):
                chunk = message_ids[start : start + 500]
                queries = (
                    select(messages.c.id, messages.c.reply).where(
                        messages.c.id.in_(chunk),
                        messages.c.handled_by.is_not(None),
                        messages.c.reply.is_not(None),
                    ),
                    select(processed.c.message_id, processed.c.reply).where(
                        processed.c.message_id.in_(chunk), processed.c.reply.is_not(None)
                    ),
                )
                for query in queries:
                    for message_id, reply in (await conn.execute(query)).all():
                        if reply and message_id not in replies:
                            replies[message_id] = Message.from_dict(reply)
        return replies

    async def workflow_steps(self, message_id: str, handler: str) -> list[StepRecord]:
        """The durable steps recorded for `handler`'s handling of `message_id`, by number."""
        query = (
            select(
                workflow_steps.c.seq,
                workflow_steps.c.name,
                workflow_steps.c.kind,
                workflow_steps.c.result,
            )
            .where(workflow_steps.c.message_id == message_id, workflow_steps.c.handler == handler)
            .order_by(workflow_steps.c.seq)
        )
        async with self.reading() as conn:
            rows = (await conn.execute(query)).all()
        return [StepRecord(row[0], row[1], row[2], row[3]) for row in rows]

    async def steps_among(
        self, message_ids: list[str], kinds: tuple[str, ...]
    ) -> dict[tuple[str, str], list[StepRecord]]:
        """The durable steps of these kinds recorded for these messages, by (message id,
        handler), in order (`mas replay` runs a trace again with them)."""
        found: dict[tuple[str, str], list[StepRecord]] = {}
        for start in range(0, len(message_ids), 500):  # IN lists stay small
            query = (
                select(
                    workflow_steps.c.message_id,
                    workflow_steps.c.handler,
                    workflow_steps.c.seq,
                    workflow_steps.c.name,
                    workflow_steps.c.kind,
                    workflow_steps.c.result,
                )
                .where(
                    workflow_steps.c.message_id.in_(message_ids[start : start + 500]),
                    workflow_steps.c.kind.in_(kinds),
                )
                .order_by(workflow_steps.c.seq)
            )
            async with self.reading() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                found.setdefault((row[0], row[1]), []).append(StepRecord(*row[2:]))
        return found

    def check_storable(self, value: Any, what: str) -> None:
        """PostgreSQL refuses NUL characters in text and JSON: say so before it does."""
        if self.dialect == "postgresql" and "\\u0000" in json.dumps(value):
            raise InvalidMessage(
                f"{what} contains a NUL character (\\u0000), which PostgreSQL cannot store: "
                "remove it or encode the data (for example base64)"
            )


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # SQLite hands back naive timestamps (stored as UTC)
    return value


def _signal_sent(task_id: str, name: str, until: datetime) -> Select[Any]:
    """The payload of signal `name` to the task, if it was sent no later than `until`."""
    return select(task_signals.c.payload).where(
        task_signals.c.task_id == task_id,
        task_signals.c.name == name,
        task_signals.c.sent_at <= until,
    )


def _timed_out(now: datetime) -> dict[str, Any]:
    return {
        "status": "timed_out",
        "error": {
            "type": "DeadlineExceeded",
            "message": f"the task's deadline passed (ended {now.isoformat()})",
            "retryable": False,
        },
    }


def _over_budget(budget: Budget, tokens: int, cost: float) -> dict[str, Any]:
    return {
        "status": "budget_exceeded",
        "error": {
            "type": "BudgetExceeded",
            "message": f"the task's model calls spent {tokens} tokens, a cost of {cost:g}: "
            f"its budget was {budget.describe()}",
            "retryable": False,
        },
    }


def _audited(row: Any) -> AuditedMessage:
    created_at = _aware(row.created_at)
    assert created_at is not None  # NOT NULL
    return AuditedMessage(
        id=row.id,
        type=row.msg_type,
        sender=row.sender,
        target=row.target,
        payload=row.payload,
        metadata=row.metadata,
        trace_id=row.trace_id,
        correlation_id=row.correlation_id,
        reply_to=row.reply_to,
        created_at=created_at,
        handled_by=row.handled_by,
    )


def _task(row: Any) -> TaskRecord:
    created_at = _aware(row.created_at)
    assert created_at is not None
    return TaskRecord(
        id=row.id,
        type=row.type,
        status=row.status,
        target=row.target,
        payload=row.payload,
        result=row.result,
        error=row.error,
        attempts=row.attempts,
        created_by=row.created_by,
        trace_id=row.trace_id,
        created_at=created_at,
        started_at=_aware(row.started_at),
        finished_at=_aware(row.finished_at),
        parent_id=row.parent_id,
        deadline=_aware(row.deadline),
        budget_tokens=row.budget_tokens,
        budget_cost=row.budget_cost,
        spent_tokens=row.spent_tokens or 0,
        spent_cost=row.spent_cost or 0.0,
    )


def _task_from_sqlite(values: Any) -> TaskRecord:
    """A task from the driver's row of `select(tasks)`: JSON as text, timestamps as text."""
    (
        id_,
        type_,
        status,
        target,
        payload,
        result,
        error,
        attempts,
        created_by,
        trace_id,
        created_at,
        started_at,
        finished_at,
        parent_id,
        deadline,
        budget_tokens,
        budget_cost,
        spent_tokens,
        spent_cost,
    ) = values
    return TaskRecord(
        id=id_,
        type=type_,
        status=status,
        target=target,
        payload=json.loads(payload),
        result=None if result is None else json.loads(result),
        error=None if error is None else json.loads(error),
        attempts=attempts,
        created_by=created_by,
        trace_id=trace_id,
        created_at=_sqlite_time(created_at),
        started_at=None if started_at is None else _sqlite_time(started_at),
        finished_at=None if finished_at is None else _sqlite_time(finished_at),
        parent_id=parent_id,
        deadline=None if deadline is None else _sqlite_time(deadline),
        budget_tokens=budget_tokens,
        budget_cost=budget_cost,
        spent_tokens=spent_tokens or 0,
        spent_cost=spent_cost or 0.0,
    )


def _sqlite_time(text: str) -> datetime:
    # As written (UTC, without an offset; see batch_sql._sqlite_timestamp).
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _agent(row: Any) -> AgentRecord:
    created_at = _aware(row.created_at)
    assert created_at is not None
    return AgentRecord(
        id=row.id,
        type=row.type,
        status=row.status,
        node_id=row.node_id,
        last_heartbeat=_aware(row.last_heartbeat),
        metadata=row.metadata or {},
        created_at=created_at,
    )
