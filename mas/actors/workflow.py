"""Durable steps: what a handler did while handling one message, so a re-run does not redo it.

A handler's `ctx.step`, `ctx.ask` and `ctx.send` are numbered in the order the handler calls
them (the number is taken when called, not when awaited, so `ctx.gather` numbers the same on
every run). Each finished one is recorded under (message id, number): in the cell's memory
while the message may be retried here, and in the journal (with its group commit, before the
delivery is acknowledged) so another node, or this one after a restart, finds it. A re-run
of the handler for the same message returns the recorded result of every finished step at
once and runs only the rest; a message a re-run sends gets the id the first run gave it
(`derived_id`), so receivers that saw it already drop the copy. A re-run whose steps differ
from the record (another name, kind or order) raises `WorkflowDiverged` instead of mixing
two paths' results.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from mas.errors import StepResultNotJSON, WorkflowDiverged
from mas.messages import Message, derived_id

if TYPE_CHECKING:
    from mas.actors.journal import Journal

__all__ = [
    "ASKS_KEY",
    "CREATED_BY_KEY",
    "DEADLINE_KEY",
    "PARENT_KEY",
    "RERUN_KEY",
    "WAKES_KEY",
    "WAKE_KEY",
    "Parked",
    "StepKind",
    "StepRecord",
    "Wait",
    "WorkflowRun",
    "dedupe_key",
    "marked_rerun",
    "marked_woken",
    "parked_asks",
    "task_of",
]

RERUN_KEY = "mas.rerun"
"""Metadata of a message that may have been handled (in part) before: sent again by a re-run
of a handler, or by the outbox after a crash. Its handler then reads its steps' record; a
first run, which can have none, does not pay for that read."""

WAKE_KEY = "mas.wake"
"""Metadata of a parked handler's wake-up: a token new on every park. The wake-up is the
message again, under its own id; a cluster-wide dedupe claim on that id alone would take it
for a copy of the handling that parked (`dedupe_key`)."""

ASKS_KEY = "mas.asks"
"""Metadata of a parked handler's wake-up: the asks it parked on, by step number (a string,
as JSON keys are), each with when it times out (epoch seconds). A re-run answers them from
their receivers' records, or parks again for the time they have left."""

WAKES_KEY = "mas.wakes"
"""Metadata of a long ask, whose asker may park while it waits: the asking handler's message
id. The commit that records its reply wakes that handler (its wake-up, the message's outbox
row, is sent at once)."""

PARENT_KEY = "mas.parent"
"""Metadata of a message a workflow step of a task sent: the task (the child's parent).
The message is itself a task then (`task_id`: its own id), recorded with `parent_id`."""

CREATED_BY_KEY = "mas.created_by"
"""Metadata of a task's message: who created the task (the gateway sets it), so that the
tasks its workflow starts belong to the same caller."""

DEADLINE_KEY = "mas.deadline"
"""Metadata of a task's message: its deadline (epoch seconds), when the task has one."""

StepKind = Literal["step", "ask", "send", "signal", "sleep"]

# Built once: `json.dumps` with options builds a new encoder on every call.
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


_SAME_IN_JSON = (str, int, bool)


class StepRecord(NamedTuple):
    """One finished durable step of a handler run: its number, name, kind and JSON result."""

    seq: int
    name: str
    kind: StepKind
    result: Any


class Wait(NamedTuple):
    """What a parked handler waits for: a time (epoch seconds), and perhaps what wakes it
    earlier: a task's signal, or the reply to its ask `ask` (a step number), whose message
    is `asked`."""

    until: float
    task_id: str | None = None
    signal: str | None = None
    ask: int | None = None
    asked: str | None = None


class Parked(BaseException):
    """Raised out of a handler whose durable wait is long: the handler gives up its agent.

    The cell catches it, records what wakes the message again (`Journal.parked`) and
    acknowledges the delivery. A `BaseException`, like `CancelledError`, so that a handler's
    `except Exception` does not swallow it: a handler must let it pass.
    """

    def __init__(self, waits: list[Wait]) -> None:
        super().__init__(waits)
        self.waits = waits


def as_json(name: str, value: Any) -> Any:
    """`value` as it will read back from the record (tuples become lists, and so on).

    The first run gets the same value a replay will, so the handler cannot behave
    differently on a re-run because of it.

    Raises:
        StepResultNotJSON: JSON cannot hold `value`.
    """
    if value is None or type(value) in _SAME_IN_JSON:
        return value  # reads back as itself: no round trip
    try:
        return json.loads(_encode(value))
    except (TypeError, ValueError) as exc:
        raise StepResultNotJSON(name, exc) from None


class WorkflowRun:
    """The durable steps of one message's handling, across the attempts this node makes.

    `handler` says whose handling it is: the message's own target (`agent:`, `type:`), which
    any agent that takes the message over after a failure shares, or for a topic message,
    which every subscriber handles under one id, the subscribing agent's address.
    """

    __slots__ = (
        "_loading",
        "answers",
        "attempts",
        "handler",
        "message_id",
        "next_seq",
        "parkable",
        "parked_asks",
        "records",
        "rerun",
    )

    def __init__(
        self,
        message_id: str,
        handler: str,
        *,
        rerun: bool,
        parkable: bool,
        parked_asks: dict[int, float] | None = None,
    ) -> None:
        self.message_id = message_id
        self.handler = handler
        self.rerun = rerun
        """The message may have been handled before elsewhere: read the record first."""
        self.parkable = parkable
        """A long wait may park the handler: the message goes to its own target again when
        the wait ends (not a topic message, whose subscribers share its id; and there is a
        journal to keep the wait in)."""
        self.parked_asks = parked_asks or {}
        """Asks an earlier run parked on (this run is their wake-up), by step number: when
        each times out. Their replies are read with the record (`answers`)."""
        self.answers: dict[int, Message] = {}
        """Replies the receivers recorded for `parked_asks`, by step number."""
        self.attempts = 1
        self.next_seq = 0
        self.records: dict[int, StepRecord] = {}
        self._loading: asyncio.Future[None] | None = None

    def begin_attempt(self) -> None:
        """A new run of the handler starts numbering its steps from the first again."""
        self.attempts += 1
        self.next_seq = 0

    @property
    def sends_again(self) -> bool:
        """What this run sends may have been sent before (by an earlier run)."""
        return self.rerun or self.attempts > 1

    def child_id(self, seq: int) -> str:
        """The id of the message step `seq` sends: the same on every run."""
        return derived_id(f"{self.message_id}/{self.handler}", seq)

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    async def recorded(
        self, journal: Journal | None, seq: int, name: str, kind: StepKind
    ) -> StepRecord | None:
        """The record of step `seq` if it finished before (checked against `name`/`kind`).

        The journal is read once per message on this node, on the first step, and only when
        the message may have been handled before (`rerun`): a first run has no record. The
        replies to the asks an earlier run parked on are read with it (`answers`).

        Raises:
            WorkflowDiverged: the record holds another step under `seq`.
            ServiceUnavailable: the journal cannot be read now (so nobody can tell whether
                the step ran: the handler fails and is retried).
        """
        if (
            journal is not None
            and self.rerun
            and (self._loading is None or not self._loading.done())
        ):
            await self._load(journal)
        record = self.records.get(seq)
        if record is None:
            return None
        if record.name != name or record.kind != kind:
            raise WorkflowDiverged(
                self.message_id, seq, f"{record.kind} {record.name}", f"{kind} {name}"
            )
        return record

    async def _load(self, journal: Journal) -> None:
        while (loading := self._loading) is not None:
            if loading.done():
                return  # read (a failed read leaves `_loading` None)
            # Another step of this run (a gather) is reading the record: wait for that read.
            await asyncio.wait([loading])
        loading = self._loading = asyncio.get_running_loop().create_future()
        try:
            records = await journal.recorded_steps(self.message_id, self.handler)
        except BaseException:
            self._loading = None  # whoever waited reads again itself, as does the next step
            loading.set_result(None)
            raise
        for record in records:
            self.records.setdefault(record.seq, record)
        unanswered = {
            self.child_id(seq): seq for seq in self.parked_asks if seq not in self.records
        }
        if unanswered:
            try:
                replies = await journal.recorded_replies(list(unanswered))
            except BaseException:
                self._loading = None
                loading.set_result(None)
                raise
            for asked, reply in replies.items():
                self.answers[unanswered[asked]] = reply
        loading.set_result(None)

    def finished(self, seq: int, name: str, kind: StepKind, result: Any) -> StepRecord:
        record = self.records[seq] = StepRecord(seq, name, kind, result)
        return record


def marked_rerun(message: Message) -> Message:
    """A copy of `message` that says it may have been handled before (`RERUN_KEY`)."""
    marked = message.copy()
    marked.metadata = {**message.metadata, RERUN_KEY: True}
    return marked


def marked_woken(message: Message, token: str, waits: list[Wait]) -> Message:
    """`message` as a parked handler's wake-up (`WAKE_KEY`): a re-run, under a new token,
    with the asks among `waits` added to those it parked on before (`ASKS_KEY`)."""
    marked = message.copy()
    metadata = {**message.metadata, RERUN_KEY: True, WAKE_KEY: token}
    asks = {wait.ask: wait.until for wait in waits if wait.ask is not None}
    if asks:
        asks = {**parked_asks(message), **asks}
        metadata[ASKS_KEY] = {str(seq): until for seq, until in asks.items()}
    marked.metadata = metadata
    return marked


def parked_asks(message: Message) -> dict[int, float]:
    """The asks a wake-up's handler parked on (`ASKS_KEY`): step number to when it times
    out. Anything malformed (metadata comes over the wire) is left out."""
    asks = message.metadata.get(ASKS_KEY)
    if not isinstance(asks, dict):
        return {}
    return {
        int(seq): float(until)
        for seq, until in asks.items()
        if isinstance(seq, str) and seq.isdigit() and isinstance(until, int | float)
    }


def dedupe_key(message: Message) -> str:
    """What tells copies of one delivery of `message` apart from another: its id, and for a
    wake-up its token (the copies of one wake-up are duplicates; the wake-up is not a copy
    of the handling that parked, nor of an earlier wake-up)."""
    token = message.metadata.get(WAKE_KEY)
    return message.id if token is None else f"{message.id}~{token}"


def task_of(message: Message) -> str | None:
    """The task `message` is the work of: its `task_id`, or, for a message a task's workflow
    step sent (a child task, `PARENT_KEY`), its own id."""
    task_id = message.task_id
    if task_id is None and PARENT_KEY in message.metadata:
        return message.id
    return task_id
