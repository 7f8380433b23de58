"""MemoryJournal: a Journal that keeps everything in lists (replay and tests)."""

from __future__ import annotations

from typing import Any

from mas.actors.budgets import Budget, Spent
from mas.actors.deadletters import DeadLetter
from mas.actors.journal import JournalNode, StartedAgent
from mas.actors.transport import Delivery
from mas.actors.workflow import StepRecord, Wait, task_of
from mas.messages import Message, TaskResult

__all__ = ["MemoryJournal"]


class MemoryJournal:
    """Records what the runtime journals, in order, without a database."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.processed: dict[str, list[str]] = {}
        self.tasks: dict[str, str] = {}
        self.results: dict[str, TaskResult] = {}
        self.agents: dict[str, str] = {}
        self.steps: dict[tuple[str, str], list[StepRecord]] = {}
        self.signals: dict[tuple[str, str], Any] = {}
        """Signals by (task id, name): a test sends one by setting it here."""
        self.replies: dict[str, Message] = {}
        """The reply each handled message got, by message id (the idempotency record's)."""
        self.parents: dict[str, str] = {}
        """Child tasks' parents, by child task id."""
        self.parked_messages: dict[str, tuple[Message, list[Wait]]] = {}
        """Messages whose handler parked, with what it waits for (nothing wakes them)."""
        self.spent_by_task: dict[str, tuple[int, float]] = {}
        """What each task with a budget spent on model calls (tokens, cost)."""

    async def open(self, node: JournalNode) -> None:
        return None

    async def close(self) -> None:
        return None

    async def flush(self) -> None:
        return None

    async def handled(
        self, agent_id: str, message: Message, reply: Message | None, delivery: Delivery | None
    ) -> None:
        self.messages.append(message)
        self.processed.setdefault(agent_id, []).append(message.id)
        if reply is not None:
            self.replies[message.id] = reply
        if delivery is not None:
            await delivery.ack()

    def skipped(self, message: Message) -> None:
        return None

    def replied(self, reply: Message) -> None:
        self.messages.append(reply)

    async def recall(self, agent_id: str, limit: int) -> list[tuple[str, Message | None]]:
        return [
            (message_id, self.replies.get(message_id))
            for message_id in self.processed.get(agent_id, [])[-limit:]
        ]

    async def handled_elsewhere(self, message_id: str) -> tuple[bool, Message | None]:
        found = any(message_id in ids for ids in self.processed.values())
        return found, self.replies.get(message_id) if found else None

    async def recorded_replies(self, message_ids: list[str]) -> dict[str, Message]:
        replies = self.replies
        return {key: replies[key] for key in message_ids if key in replies}

    def step_finished(
        self, agent_id: str, message_id: str, handler: str, record: StepRecord
    ) -> None:
        self.steps.setdefault((message_id, handler), []).append(record)

    async def recorded_steps(self, message_id: str, handler: str) -> list[StepRecord]:
        return sorted(self.steps.get((message_id, handler), []))

    async def read_signal(self, task_id: str, name: str, until: float) -> tuple[bool, Any]:
        key = (task_id, name)
        return (True, self.signals[key]) if key in self.signals else (False, None)

    async def parked(
        self, agent_id: str, message: Message, delivery: Delivery | None, waits: list[Wait]
    ) -> None:
        self.parked_messages[message.id] = (message, waits)
        if delivery is not None:
            await delivery.ack()

    def child_task(self, parent_id: str, message: Message) -> None:
        self.tasks[message.id] = "pending"
        self.parents[message.id] = parent_id

    def task_running(self, message: Message, agent_id: str, attempt: int) -> None:
        task_id = task_of(message)
        if task_id is not None:
            self.tasks[task_id] = "running"

    def task_finished(self, result: TaskResult, message: Message, attempt: int) -> None:
        self.tasks[result.task_id] = result.status
        self.results[result.task_id] = result

    def dead_lettered(self, letter: DeadLetter) -> None:
        if letter.message.task_id is not None:
            self.tasks[letter.message.task_id] = "dead_lettered"

    def agent_started(self, agent: StartedAgent) -> None:
        self.agents[agent.id] = "running"

    def agent_stopped(self, agent_id: str, agent_type: str, reason: str) -> None:
        self.agents[agent_id] = "stopped"

    async def charge(self, task_id: str, budget: Budget, tokens: int, cost: float) -> Spent:
        spent_tokens, spent_cost = self.spent_by_task.get(task_id, (0, 0.0))
        spent_tokens, spent_cost = spent_tokens + tokens, spent_cost + cost
        self.spent_by_task[task_id] = (spent_tokens, spent_cost)
        asking = tokens == 0 and cost == 0
        exceeded = budget.crossed(spent_tokens, spent_cost, asking=asking)
        if exceeded:
            self.tasks[task_id] = "budget_exceeded"
        return Spent(spent_tokens, spent_cost, exceeded)

    async def spent(self, task_id: str) -> tuple[int, float]:
        return self.spent_by_task.get(task_id, (0, 0.0))

    async def live_capabilities(self) -> dict[str, tuple[str, ...]]:
        return {}  # one process: the runtime knows its own agents
