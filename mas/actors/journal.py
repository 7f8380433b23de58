"""Journal: what the runtime tells a persistent record of itself (the store implements it).

The actor core stays free of SQL: it calls these hooks at the moments that matter, and the
implementation (`mas.persistence.journal.StoreJournal`) decides how to write them — in
batches, behind the hot path. `handled` owns the delivery from then on and acknowledges it
only once the record is committed: nothing is acknowledged that was not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mas.messages import Message, TaskResult

if TYPE_CHECKING:
    from mas.actors.budgets import Budget, Spent
    from mas.actors.deadletters import DeadLetter
    from mas.actors.transport import Delivery
    from mas.actors.workflow import StepRecord, Wait

__all__ = ["Journal", "JournalNode", "StartedAgent"]


@dataclass(frozen=True, slots=True)
class StartedAgent:
    """An agent that started, or restarted, on this node, as its record says it."""

    id: str
    type: str
    capabilities: tuple[str, ...]
    supervisor: str = "root"
    """Its supervisor's path: the ids from the node's root down, by `/`."""
    restarts: int = 0


class JournalNode(Protocol):
    """What a journal needs from the runtime it records: its name, a way to send what a
    commit decided to send (the outbox), and where to report a failure of its own tasks."""

    @property
    def node_id(self) -> str: ...

    async def hand_over(self, message: Message, *, resent: bool = False) -> bool:
        """Send `message` to its target; True when an agent of this node took it.

        `resent`: the message may have been sent before (recovered from the outbox after a
        crash), so whoever receives it checks the record before handling it.
        """

    def fail(self, error: BaseException) -> None:
        """A task of the journal crashed: fail the runtime (never lose the error)."""

    def handling_tasks(self) -> set[str]:
        """The tasks whose messages this node's agents are handling now."""

    def cancel_task_handlers(self, task_id: str) -> int:
        """Cancel this node's handlers of task `task_id` (cancelled elsewhere); how many."""

    async def retire_agent(self, agent_id: str) -> bool:
        """An agent the record shows gone for good: remove its queue (True when it has
        none any more; False while someone still consumes it)."""


class Journal(Protocol):
    async def open(self, node: JournalNode) -> None:
        """Start writing (the runtime is starting)."""

    async def close(self) -> None:
        """Flush everything recorded so far and stop (the runtime has drained)."""

    async def flush(self) -> None:
        """Wait until everything recorded so far is committed."""

    async def handled(
        self, agent_id: str, message: Message, reply: Message | None, delivery: Delivery | None
    ) -> None:
        """An agent handled `message` (and answered `reply`); settle `delivery` once durable.

        May wait when the write backlog is too long (back-pressure on the handlers).
        """

    def skipped(self, message: Message) -> None:
        """`message` was not handled because it had been handled before (a duplicate)."""

    def replied(self, reply: Message) -> None:
        """A reply went to an asker (audit)."""

    async def recall(self, agent_id: str, limit: int) -> list[tuple[str, Message | None]]:
        """Message ids (and replies) the agent handled before, oldest first."""

    async def handled_elsewhere(self, message_id: str) -> tuple[bool, Message | None]:
        """Whether any agent handled this message id already (and its stored reply).

        Asked only for a message the broker delivers again, which another node may have
        handled before it died without acknowledging.
        """

    async def recorded_replies(self, message_ids: list[str]) -> dict[str, Message]:
        """The replies recorded for those of these messages that were answered, by id (the
        asks a parked handler waited for).

        Raises a `MasError` when the record cannot be read now.
        """

    def step_finished(
        self, agent_id: str, message_id: str, handler: str, record: StepRecord
    ) -> None:
        """A durable step of `handler`'s handling of `message_id` finished (see
        `mas.actors.workflow`). Committed no later than the message's `handled` record."""

    async def recorded_steps(self, message_id: str, handler: str) -> list[StepRecord]:
        """The durable steps recorded for `handler`'s handling of `message_id`, by number.

        Raises a `MasError` when the record cannot be read now.
        """

    async def read_signal(self, task_id: str, name: str, until: float) -> tuple[bool, Any]:
        """(True, payload) once signal `name` was sent to the task no later than `until`
        (epoch seconds: a wait's deadline), else (False, None).

        Raises a `MasError` when the record cannot be read now.
        """

    async def parked(
        self, agent_id: str, message: Message, delivery: Delivery | None, waits: list[Wait]
    ) -> None:
        """A handler of `message` parked in durable waits: keep what wakes it, then settle.

        Once the record holds the steps so far and a wake-up (the message, sent again to its
        target when the first wait ends, or at once when one of the awaited signals is
        sent or asks answered), `delivery` is acknowledged. The message is not recorded as
        handled.

        Raises a `MasError` when the wake-up cannot be recorded (nothing is acknowledged).
        """

    def child_task(self, parent_id: str, message: Message) -> None:
        """A workflow step of task `parent_id` sends `message` (marked `PARENT_KEY`): record
        it as a task of its own (its id the message's), child of `parent_id`. The caller
        flushes before the message goes, so that its start finds the record."""

    def task_running(self, message: Message, agent_id: str, attempt: int) -> None:
        """A message that belongs to a task is being handled."""

    def task_finished(self, result: TaskResult, message: Message, attempt: int) -> None:
        """A handler returned a TaskResult for the task."""

    def dead_lettered(self, letter: DeadLetter) -> None:
        """A message went to dead letters (kept for an operator; a task's ends with it)."""

    def agent_started(self, agent: StartedAgent) -> None:
        """An agent was spawned, or restarted, on this node."""

    def agent_stopped(self, agent_id: str, agent_type: str, reason: str) -> None:
        """An agent stopped for good on this node."""

    async def charge(self, task_id: str, budget: Budget, tokens: int, cost: float) -> Spent:
        """Count what a model call spent for the task holding `budget` (nothing: before a
        call, only ask what is left), for every process to see. Past the budget (before a
        call: at it) the task ends `budget_exceeded` with its children, and their handlers
        here are cancelled; `Spent.exceeded` says so. An unknown task spends nothing.

        Raises a `MasError` when the record cannot be written now.
        """

    async def spent(self, task_id: str) -> tuple[int, float]:
        """What the task's model calls, and its children's, spent (tokens, cost) so far.

        Raises a `MasError` when the record cannot be read now.
        """

    async def live_capabilities(self) -> dict[str, tuple[str, ...]]:
        """The agent types running anywhere in the cluster, each with its capabilities.

        Read for `capability:` addresses no local agent serves. Raises a `MasError` when
        the record cannot be read now.
        """
