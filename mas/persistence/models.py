"""Tables: agents, tasks, the message audit, processed message ids (idempotency), the outbox,
and the durable steps of workflow handlers.

One model serves SQLite and PostgreSQL: JSON columns become JSONB on PostgreSQL. Agent ids are
strings (`agent:<id>` allows any id a user picks), task and message ids are the UUID strings
mas generates (or a client-supplied idempotency key).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "AgentRow",
    "Base",
    "DeadLetterRow",
    "MessageRow",
    "OutboxRow",
    "ProcessedMessageRow",
    "SchemaFloorRow",
    "TaskRow",
    "TaskSignalRow",
    "WorkflowStepRow",
    "agents",
    "dead_letters",
    "messages",
    "outbox",
    "processed",
    "schema_floor",
    "task_signals",
    "tasks",
    "workflow_steps",
    "workflow_waits",
]

JSONType = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class AgentRow(Base):
    """An agent known to the system: where it runs, whether it is alive."""

    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    type: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    node_id: Mapped[str | None] = mapped_column(String(200))
    last_heartbeat: Mapped[datetime | None] = mapped_column(Timestamp)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class TaskRow(Base):
    """A unit of work and its lifecycle: pending -> running -> a final status."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(210))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    result: Mapped[Any | None] = mapped_column(JSONType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(200))
    trace_id: Mapped[str | None] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    parent_id: Mapped[str | None] = mapped_column(String(64))
    """The task whose workflow started this one (`ctx.ask`/`ctx.send` in its handler)."""
    deadline: Mapped[datetime | None] = mapped_column(Timestamp)
    """Past it, the task (and what its workflow started) ends `timed_out`."""
    budget_tokens: Mapped[int | None] = mapped_column(BigInteger)
    budget_cost: Mapped[float | None] = mapped_column(Float)
    """What the task and its children may spend on models; past it, it ends
    `budget_exceeded` (the check is the message's `mas.budget`; these show it)."""
    spent_tokens: Mapped[int | None] = mapped_column(BigInteger)
    spent_cost: Mapped[float | None] = mapped_column(Float)
    """What its model calls and its children's spent so far (`Store.charge`; NULL: 0, so
    that the journal's inserts, which name only the columns they know, need not change)."""

    __table_args__ = (
        Index("ix_tasks_status_created_at", "status", "created_at"),
        # A caller lists its own tasks (the gateway's ownership rule).
        Index("ix_tasks_created_by_created_at", "created_by", "created_at"),
        Index("ix_tasks_parent_id_created_at", "parent_id", "created_at"),
        Index("ix_tasks_deadline", "deadline"),
    )


class MessageRow(Base):
    """The audit trail: every message handled by an agent, and every reply to an asker."""

    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    msg_type: Mapped[str] = mapped_column(String(200))
    sender: Mapped[str | None] = mapped_column(String(210), index=True)
    target: Mapped[str | None] = mapped_column(String(210))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, default=dict)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(64))
    reply_to: Mapped[str | None] = mapped_column(String(210))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    # The agent that handled this message and the reply it gave: with a full audit, this row
    # is also the idempotency record, so a handled message costs one row, not two.
    handled_by: Mapped[str | None] = mapped_column(String(200))
    reply: Mapped[dict[str, Any] | None] = mapped_column(JSONType)

    __table_args__ = (
        Index("ix_messages_trace_id_created_at", "trace_id", "created_at"),
        Index("ix_messages_handled_by_created_at", "handled_by", "created_at"),
    )


class ProcessedMessageRow(Base):
    """Message ids an agent has handled (and the reply it gave), across restarts.

    Written when the audit does not already record the handling (`MAS_AUDIT` other than
    `all`, or a topic message, which several agents handle under one id).
    """

    __tablename__ = "processed_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    agent_id: Mapped[str] = mapped_column(String(200))
    message_id: Mapped[str] = mapped_column(String(64))
    reply: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    processed_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (
        UniqueConstraint("agent_id", "message_id"),
        Index("ix_processed_messages_agent_id_id", "agent_id", "id"),
        Index("ix_processed_messages_message_id", "message_id"),
    )


class OutboxRow(Base):
    """A message a commit decided to send, kept until it is on its way (transactional outbox).

    Written in the transaction that decides the send (a task's creation, later a workflow
    step), so a crash after the commit cannot lose the message: a relay hands it over after
    the commit and deletes the row once the broker confirmed it (or, for a message handed to
    an agent in the same process, once that agent handled it). `owner` is the node whose
    relay holds the row until `available_at`; past that lease, any node's relay may claim
    it and send it again (the consumer's deduplication makes a second copy harmless).
    """

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message: Mapped[dict[str, Any]] = mapped_column(JSONType)
    owner: Mapped[str | None] = mapped_column(String(200))
    available_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class WorkflowStepRow(Base):
    """A finished durable step (`ctx.step`, `ask`, `send`) of one handling of a message.

    `handler` is whose handling it is (the message's target, or the subscriber's address
    for a topic message); `seq` numbers the handler's steps in the order it calls them. A
    re-run of the handler reads these back instead of doing the steps again.
    """

    __tablename__ = "workflow_steps"

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    handler: Mapped[str] = mapped_column(String(210), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    agent_id: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(300))
    kind: Mapped[str] = mapped_column(String(16))
    result: Mapped[Any] = mapped_column(JSONType, nullable=True)
    finished_at: Mapped[datetime] = mapped_column(Timestamp)


class TaskSignalRow(Base):
    """A signal sent to a task (`POST /tasks/{id}/signals/{name}`), kept for the workflow
    that waits for it (`ctx.signal(name)`), whether it waits already or later. The first
    signal of a name counts; a repeat changes nothing."""

    __tablename__ = "task_signals"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    payload: Mapped[Any] = mapped_column(JSONType, nullable=True)
    sent_by: Mapped[str | None] = mapped_column(String(200))
    sent_at: Mapped[datetime] = mapped_column(Timestamp)


class WorkflowWaitRow(Base):
    """A parked handler (`mas.actors.workflow.Parked`) waiting for a task's signal.

    Its wake-up is the message's outbox row (`available_at` = the wait's deadline); the
    transaction that stores the signal (`Store.send_signal`) deletes these rows and makes
    that outbox row due at once. A row left by a wait that timed out only costs a wake-up
    that finds nothing to do.
    """

    __tablename__ = "workflow_waits"

    task_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)


class DeadLetterRow(Base):
    """A message no agent could handle, kept so an operator can read it, replay it to its
    original address, or discard it (`/dead-letters/`).

    Keyed by the message's id: the same message dead-lettered twice (a redelivery) is one
    row. `status` is `dead` until an operator settles it: `replayed` (as the message
    `replayed_as`, a copy with a new id, sent through the outbox in the same transaction) or
    `discarded`. The row stays after either, as the record of what happened.
    """

    __tablename__ = "dead_letters"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    message: Mapped[dict[str, Any]] = mapped_column(JSONType)
    target: Mapped[str] = mapped_column(String(300), index=True)
    message_type: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(String(64), index=True)
    agent_id: Mapped[str | None] = mapped_column(String(200), index=True)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer)
    task_id: Mapped[str | None] = mapped_column(String(64), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(64))
    node_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    replayed_as: Mapped[str | None] = mapped_column(String(64))
    settled_by: Mapped[str | None] = mapped_column(String(200))
    settled_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)

    __table_args__ = (Index("ix_dead_letters_status_created_at", "status", "created_at"),)


class SchemaFloorRow(Base):
    """One row: the oldest schema revision whose mas runs on this database, written by every
    `mas db upgrade` (mas.persistence.schema). A release older than the database's revision
    reads it to know whether it may start: during a rolling upgrade, the previous release's
    pods keep running, and restarting, on the new schema when its migrations allow it."""

    __tablename__ = "schema_floor"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    oldest_revision: Mapped[str] = mapped_column(String(32))


# The tables for Core statements (the store's queries, the journal's batches).
agents: Table = AgentRow.__table__  # type: ignore[assignment]
tasks: Table = TaskRow.__table__  # type: ignore[assignment]
messages: Table = MessageRow.__table__  # type: ignore[assignment]
processed: Table = ProcessedMessageRow.__table__  # type: ignore[assignment]
outbox: Table = OutboxRow.__table__  # type: ignore[assignment]
workflow_steps: Table = WorkflowStepRow.__table__  # type: ignore[assignment]
workflow_waits: Table = WorkflowWaitRow.__table__  # type: ignore[assignment]
task_signals: Table = TaskSignalRow.__table__  # type: ignore[assignment]
dead_letters: Table = DeadLetterRow.__table__  # type: ignore[assignment]
schema_floor: Table = SchemaFloorRow.__table__  # type: ignore[assignment]
