"""Request and response bodies of the gateway (pydantic: validated, documented in OpenAPI)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    model_validator,
)
from typing_extensions import TypedDict

from mas.errors import InvalidMessage
from mas.messages import MAX_DEPTH, Message, check_depth
from mas.persistence.dead_letters import DeadLetterRecord
from mas.persistence.store import TRACE_LIMIT, AgentRecord, AuditedMessage, TaskRecord

__all__ = [
    "AgentIn",
    "AgentList",
    "AgentOut",
    "DeadLetterList",
    "DeadLetterOut",
    "MessageIn",
    "MessageOut",
    "MessageTaskIn",
    "StepOut",
    "TaskIn",
    "TaskList",
    "TaskMessagesOut",
    "TaskOut",
    "TaskSubmission",
    "TaskTreeOut",
    "TraceMessageOut",
]

ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:@\-]*$"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"
# The addresses a task may go to, each part as long as TaskIn allows it (200 characters).
TARGET_PATTERN = (
    r"^(agent:[A-Za-z0-9_][A-Za-z0-9_.:@\-]{0,199}"
    r"|(type|capability):[A-Za-z_][A-Za-z0-9_.\-]{0,199})$"
)
MAX_DEADLINE = 366 * 24 * 3600.0
"""The furthest a task's deadline may be (seconds): a year and a day."""

TaskStatus = Literal[
    "pending",
    "running",
    "succeeded",
    "failed",
    "dead_lettered",
    "cancelled",
    "timed_out",
    "budget_exceeded",
]


class BudgetIn(BaseModel):
    """What a task's model calls, and its children's, may spend in all (one or both)."""

    model_config = ConfigDict(extra="forbid")

    tokens: int | None = Field(None, ge=1, le=10**12, description="prompt + completion tokens")
    cost: float | None = Field(
        None, gt=0, le=1e9, description="in the currency of MAS_LLM__PROMPT_PRICE"
    )

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetIn:
        if self.tokens is None and self.cost is None:
            raise ValueError("a budget names 'tokens', 'cost' or both")
        return self


Payload = Annotated[
    dict[str, Any],
    AfterValidator(partial(check_depth, what="payload")),
    Field(description=f"a JSON object, nested at most {MAX_DEPTH} levels deep"),
]
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(partial(check_depth, what="metadata")),
    Field(description=f"a JSON object, nested at most {MAX_DEPTH} levels deep"),
]


def _exactly_one(*names: str) -> dict[str, Any]:
    """JSON schema: exactly one of `names` is given as a string (the others absent or null)."""
    return {
        "oneOf": [
            {
                "required": [name],
                "properties": {
                    other: {"type": "string"} if other == name else {"type": "null"}
                    for other in names
                },
            }
            for name in names
        ]
    }


def _destinations() -> dict[str, Any]:
    """JSON schema of `TaskIn._one_destination`: exactly one of agent, type, capability, or
    a capability with a type to fall back on."""
    schema = _exactly_one("agent", "type", "capability")
    schema["oneOf"].append(
        {
            "required": ["capability", "type"],
            "properties": {
                "agent": {"type": "null"},
                "type": {"type": "string"},
                "capability": {"type": "string"},
            },
        }
    )
    return schema


class TaskIn(BaseModel):
    """A task for one agent (`agent`), any agent of a type (`type`), or of a capability
    (`capability`, with `type` as the fallback when no live agent offers it)."""

    # The rule `_one_destination` enforces, stated in the schema too (a client generated
    # from the OpenAPI document knows it).
    model_config = ConfigDict(extra="forbid", json_schema_extra=_destinations())

    agent: str | None = Field(None, max_length=200, pattern=ID_PATTERN, description="agent id")
    type: str | None = Field(None, max_length=200, pattern=NAME_PATTERN, description="agent type")
    capability: str | None = Field(None, max_length=200, pattern=NAME_PATTERN)
    message_type: str = Field("task", min_length=1, max_length=200, pattern=NAME_PATTERN)
    payload: Payload = Field(default_factory=dict)
    id: str | None = Field(
        None, max_length=64, pattern=ID_PATTERN, description="task id, also the idempotency key"
    )
    deadline: float | None = Field(
        None,
        gt=0,
        le=MAX_DEADLINE,
        description="seconds from now: past it, the task (and the tasks its workflow "
        "started) ends timed_out and its handlers are cancelled",
    )
    budget: BudgetIn | None = Field(
        None,
        description="what its model calls and its children's may spend: the call that "
        "goes past it ends the task (and its children) budget_exceeded",
    )

    @model_validator(mode="after")
    def _one_destination(self) -> TaskIn:
        named = [n for n in ("agent", "type", "capability") if getattr(self, n) is not None]
        if len(named) != 1 and named != ["type", "capability"]:
            raise ValueError(
                "name exactly one of 'agent', 'type' or 'capability', or a 'capability' "
                f"with a 'type' to fall back on (got {', '.join(named) or 'none'})"
            )
        return self


class MessageTaskIn(BaseModel):
    """A task given as a Message (the shape agents exchange): its `target` routes it.

    `target` is `agent:<id>`, `type:<type>` or `capability:<name>`; `id` is the task id (and
    idempotency key, as a body `id` is), `type` the message type the handler sees,
    `trace_id` continues the caller's trace and `correlation_id` is kept. `sender` is what
    the client claims, not an identity the gateway checked: it is kept in the metadata
    (`sender`), never as the message's sender, so no handler trusts it and no reply is sent
    to it; the task's result is what the caller reads. `reply_to` must be null for the same
    reason (`Message.to_dict` writes it, so mas's own JSON is taken as it is).
    """

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(
        None, max_length=64, pattern=ID_PATTERN, description="task id, also the idempotency key"
    )
    type: str = Field(
        ..., min_length=1, max_length=200, pattern=NAME_PATTERN, description="message type"
    )
    target: str = Field(
        ..., pattern=TARGET_PATTERN, description="agent:<id>, type:<type> or capability:<name>"
    )
    sender: str | None = Field(
        None,
        max_length=211,
        description="who the client says sent it; kept in metadata, not trusted",
    )
    reply_to: None = Field(None, description="must be null: the task's result is the answer")
    correlation_id: str | None = Field(None, max_length=64, pattern=ID_PATTERN)
    payload: Payload = Field(default_factory=dict)
    metadata: Metadata = Field(default_factory=dict)
    trace_id: str | None = Field(
        None, pattern=r"^[0-9a-f]{32}$", description="32 lowercase hex digits"
    )
    created_at: datetime | None = Field(
        None, description="accepted for the Message shape; the task records its own creation"
    )

    def as_task(self) -> TaskIn:
        """The same task in the TaskIn shape (what idempotent repeats are compared by)."""
        kind, _, name = self.target.partition(":")
        return TaskIn.model_validate(
            {kind: name, "message_type": self.type, "payload": self.payload, "id": self.id}
        )


SUBMISSION_TAGS = frozenset({"task", "message"})
"""The names of `TaskSubmission`'s shapes, which pydantic puts into an error's location."""


def _submission_shape(body: Any) -> str:
    if isinstance(body, MessageTaskIn) or (isinstance(body, dict) and "target" in body):
        return "message"
    return "task"


TaskSubmission = Annotated[
    Annotated[TaskIn, Tag("task")] | Annotated[MessageTaskIn, Tag("message")],
    Discriminator(_submission_shape),
]
"""What `POST /tasks/` takes: a body with `target` is a Message, any other a TaskIn. Chosen
by that key, so a client's mistake is reported against the shape it meant."""


class TaskOut(BaseModel):
    id: str
    type: str
    status: TaskStatus
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
    parent_id: str | None = Field(
        None, description="the task whose workflow started this one (a child task)"
    )
    deadline: datetime | None = Field(
        None, description="past it, the task and its children end timed_out"
    )
    budget: dict[str, Any] | None = Field(
        None, description="what its model calls may spend (tokens, cost), if limited"
    )
    spent: dict[str, Any] = Field(
        default_factory=dict, description="what its model calls spent under its budget"
    )

    @classmethod
    def of(cls, task: TaskRecord) -> TaskOut:
        return cls.model_validate(_writable(task), from_attributes=True)

    @staticmethod
    def json_of(task: TaskRecord) -> bytes:
        """`TaskOut.of(task)` as JSON, written straight from the record.

        What the store holds was validated on its way in; building and validating a
        `TaskOut` (and FastAPI validating it again as the response model) costs more than
        the rest of a small request's own work. The writer is made from `TaskOut`'s fields
        (`_TASK_JSON`), and values nested too deep are replaced as `of` replaces them, so
        the JSON is exactly `TaskOut.of(task)`'s.
        """
        return _TASK_JSON.dump_json(_fields(_writable(task)))


_TASK_FIELDS = tuple(TaskOut.model_fields)
# A TypedDict of `TaskOut`'s fields, with their declared types: pydantic writes a dict of the
# record's values with it in a third of the time building and writing a `TaskOut` takes
# (even unvalidated, with `model_construct`), and writes it the same way (a test pins that).
_typed_dict: Any = TypedDict  # called with fields known only at run time
_TaskOutJSON = _typed_dict(
    "TaskOutJSON", {name: field.annotation for name, field in TaskOut.model_fields.items()}
)
_TASK_JSON: TypeAdapter[dict[str, Any]] = TypeAdapter(_TaskOutJSON)


def _fields(task: TaskRecord) -> dict[str, Any]:
    """The record's values of `TaskOut`'s fields, by name."""
    return {name: getattr(task, name) for name in _TASK_FIELDS}


_WRITABLE_DEPTH = 200  # what pydantic still writes out (it stops at 255), with room to spare


def _writable(task: TaskRecord) -> TaskRecord:
    """`task`, with any value nested too deep to write out replaced by a note saying so.

    Such values cannot enter any more (`MAX_DEPTH`); a task stored before that rule must not
    turn every read that lists it into an error.
    """
    changes: dict[str, Any] = {}
    for name in ("payload", "result", "error"):
        try:
            check_depth(getattr(task, name), name, _WRITABLE_DEPTH)
        except InvalidMessage:
            note = f"not shown: nested deeper than {_WRITABLE_DEPTH} levels"
            changes[name] = {"unreadable": note}
    return dataclasses.replace(task, **changes) if changes else task


def _writable_value(value: Any, name: str) -> Any:
    """`value`, or a note saying so if it is nested too deep to write out (see `_writable`)."""
    try:
        check_depth(value, name, _WRITABLE_DEPTH)
    except InvalidMessage:
        return {"unreadable": f"not shown: nested deeper than {_WRITABLE_DEPTH} levels"}
    return value


class TaskList(BaseModel):
    items: list[TaskOut]
    limit: int
    offset: int

    @staticmethod
    def json_of(tasks: Sequence[TaskRecord], limit: int, offset: int) -> bytes:
        """A `TaskList` of `tasks` as JSON, each item written as `TaskOut.json_of` writes it."""
        items = [_fields(_writable(task)) for task in tasks]
        return _TASK_LIST_JSON.dump_json({"items": items, "limit": limit, "offset": offset})


_TASK_LIST_JSON: TypeAdapter[dict[str, Any]] = TypeAdapter(
    _typed_dict(
        "TaskListJSON",
        {
            name: list[_TaskOutJSON] if name == "items" else field.annotation  # type: ignore[valid-type]
            for name, field in TaskList.model_fields.items()
        },
    )
)


class StepOut(BaseModel):
    """A finished durable step of the task's handler (`ctx.step`, `ask`, `send`, a wait)."""

    seq: int = Field(description="its number in the handler's run, from 0")
    name: str = Field(description="the step's name, or the address an ask/send went to")
    kind: Literal["step", "ask", "send", "signal", "sleep"]
    handler: str = Field(description="whose handling: the task's target, or a subscriber")
    agent_id: str = Field(description="the agent that ran it")
    finished_at: datetime = Field(description="when it finished (a wait: when it began)")
    result: Any = Field(
        None,
        description="what it gave: a step's result (a planner's plan, a model's answer), an "
        "ask's answer (its reply's payload), a wait's end; null for a send",
    )
    result_omitted: bool = Field(False, description="the result was too large to show here")


class TaskTreeOut(BaseModel):
    """A task with its workflow: the steps its handler finished and the tasks it started."""

    task: TaskOut
    steps: list[StepOut]
    children: list[TaskOut] = Field(description="child tasks, oldest first (at most 500)")


class TraceMessageOut(BaseModel):
    """A message of a task's trace, as the audit recorded it."""

    id: str
    type: str = Field(description="the message type")
    sender: str | None = Field(description="the address it came from (null: the gateway)")
    target: str | None = Field(description="the address it went to")
    correlation_id: str | None = Field(description="what it answers (a reply: the ask's id)")
    task_id: str | None = Field(description="the task it belongs to (the trace's or a child)")
    created_at: datetime
    handled_by: str | None = Field(
        description="the agent that handled it, when the audit records that (MAS_AUDIT=all); "
        "null: not handled (yet), or not recorded"
    )
    payload: dict[str, Any]

    @classmethod
    def of(cls, message: AuditedMessage) -> TraceMessageOut:
        return cls(
            id=message.id,
            type=message.type,
            sender=message.sender,
            target=message.target,
            correlation_id=message.correlation_id,
            task_id=message.task_id,
            created_at=message.created_at,
            handled_by=message.handled_by,
            payload=_writable_value(message.payload, "payload")
            if isinstance(message.payload, dict)
            else {"unreadable": f"not shown: not a JSON object ({type(message.payload).__name__})"},
        )


class TaskMessagesOut(BaseModel):
    """The audited messages of a task's trace, oldest first: what its handlers were sent,
    sent and answered, and those of its child tasks."""

    task_id: str
    trace_id: str | None
    audited: bool = Field(
        description="false: this gateway does not audit messages (MAS_AUDIT=off), so there "
        "are none to show"
    )
    audit: Literal["all", "tasks", "off"] = Field(
        description="MAS_AUDIT of this gateway: `tasks` records only the messages of tasks"
    )
    items: list[TraceMessageOut]
    limit: int = Field(description="the most messages of a trace that are read")
    cut: bool = Field(
        description=f"the trace has more than `limit` ({TRACE_LIMIT}) messages: these are "
        "the oldest"
    )
    hidden: int = Field(
        description="messages read but not shown: of another caller's task, or of none "
        "(a caller without tasks:admin sees its own tasks' only)"
    )


class AgentIn(BaseModel):
    """Register (start) an agent of a type this gateway's runtime knows."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(..., max_length=200, pattern=NAME_PATTERN)
    id: str | None = Field(None, max_length=200, pattern=ID_PATTERN)


class SignalOut(BaseModel):
    """What `POST /tasks/{id}/signals/{name}` did: the first signal of a name is stored
    (`stored`); a repeat of the name changes nothing (`stored` false)."""

    task_id: str
    name: str
    stored: bool
    task_status: TaskStatus


class AgentOut(BaseModel):
    id: str
    type: str
    status: str
    node_id: str | None
    last_heartbeat: datetime | None
    metadata: dict[str, Any]
    created_at: datetime | None
    mailbox: int | None = Field(None, description="queued messages, when hosted here")
    live: bool = Field(
        False, description="running, and its node's heartbeat is fresh (3 intervals)"
    )

    @classmethod
    def of(cls, agent: AgentRecord, mailbox: int | None = None, *, stale_after: float) -> AgentOut:
        data = {name: getattr(agent, name) for name in AgentRecord.__slots__}
        return cls(**data, mailbox=mailbox, live=agent.live(stale_after))


class AgentList(BaseModel):
    items: list[AgentOut]
    limit: int
    offset: int


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(..., min_length=1, max_length=200, pattern=NAME_PATTERN)
    payload: Payload = Field(default_factory=dict)
    id: str | None = Field(None, max_length=64, pattern=ID_PATTERN)
    metadata: Metadata = Field(default_factory=dict)


class MessageOut(BaseModel):
    id: str
    type: str
    sender: str | None
    target: str | None
    payload: dict[str, Any]
    metadata: dict[str, Any]
    trace_id: str | None
    correlation_id: str | None
    created_at: datetime

    @classmethod
    def of(cls, message: Message) -> MessageOut:
        return cls(
            id=message.id,
            type=message.type,
            sender=message.sender,
            target=message.target,
            payload=message.payload,
            metadata=message.metadata,
            trace_id=message.trace_id,
            correlation_id=message.correlation_id,
            created_at=message.created_at,
        )


DeadLetterStatus = Literal["dead", "replayed", "discarded"]


class DeadLetterOut(BaseModel):
    """A message no agent could handle, why, and what an operator did with it."""

    id: str = Field(description="the dead-lettered message's id")
    status: DeadLetterStatus = Field(
        description="`dead` until replayed (as `replayed_as`) or discarded"
    )
    reason: str = Field(
        description="why: max_attempts, unroutable, agent_stopped, mailbox_full, ..."
    )
    target: str = Field(description="the address the message was sent to")
    message_type: str
    agent_id: str | None = Field(description="the agent whose handler gave up, if one did")
    error: dict[str, Any] | None = Field(description="the last error: type and message")
    attempts: int
    task_id: str | None
    trace_id: str | None
    node_id: str | None = Field(description="the node that dead-lettered it")
    created_at: datetime
    replayed_as: str | None = Field(description="the id of the copy a replay sent")
    settled_by: str | None = Field(description="who replayed or discarded it")
    settled_at: datetime | None
    message: dict[str, Any] = Field(description="the message as it was sent")

    @classmethod
    def of(cls, letter: DeadLetterRecord) -> DeadLetterOut:
        return cls.model_validate(letter, from_attributes=True)


class DeadLetterList(BaseModel):
    items: list[DeadLetterOut]
    limit: int
    offset: int
