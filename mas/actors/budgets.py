"""A task's budget for model calls, shared by its steps and the tasks its workflow starts.

The gateway puts the budget in the task's message metadata (`BUDGET_KEY`: the task that holds
it, and its limits) and a workflow's child tasks inherit it, on whatever node they run. A
model call made while handling such a message is first checked against what the task has
spent (`Journal.charge` of nothing), then counted (`Journal.charge` of its tokens and cost)
in the task's record, which every process shares; the charge that takes the count past the
limit ends the task `budget_exceeded`, with its children, and the call's caller gets
`BudgetExceeded`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mas.messages import Message

__all__ = ["BUDGET_KEY", "Budget", "Spent", "budget_of"]

BUDGET_KEY = "mas.budget"
"""Metadata of a task's message (and of its children's): `{"task": id, "tokens": n, "cost": x}`,
the task whose budget its model calls spend, and that budget's limits."""


@dataclass(frozen=True, slots=True)
class Budget:
    """At most `tokens` tokens and/or `cost` (in the currency of `MAS_LLM__*_PRICE`)."""

    tokens: int | None = None
    cost: float | None = None

    @property
    def limited(self) -> bool:
        """Whether it limits anything (with no limit, spending is only counted)."""
        return self.tokens is not None or self.cost is not None

    def crossed(self, tokens: int, cost: float, *, asking: bool) -> bool:
        """Whether `tokens` and `cost` spent are past this budget; `asking` (before a call):
        whether nothing is left of it."""
        if asking:
            return (self.tokens is not None and tokens >= self.tokens) or (
                self.cost is not None and cost >= self.cost
            )
        return (self.tokens is not None and tokens > self.tokens) or (
            self.cost is not None and cost > self.cost
        )

    def describe(self) -> str:
        parts = [f"{self.tokens} tokens" if self.tokens is not None else ""]
        parts.append(f"a cost of {self.cost:g}" if self.cost is not None else "")
        return " and ".join(part for part in parts if part)

    def metadata(self, task_id: str) -> dict[str, Any]:
        return {"task": task_id, "tokens": self.tokens, "cost": self.cost}


@dataclass(frozen=True, slots=True)
class Spent:
    """What a task has spent, and whether that ended it (`budget_exceeded`)."""

    tokens: int
    cost: float
    exceeded: bool


def budget_of(message: Message | None) -> tuple[str, Budget] | None:
    """The task whose budget `message`'s model calls spend, and its budget, if any."""
    if message is None:
        return None
    found = message.metadata.get(BUDGET_KEY)
    if not isinstance(found, dict) or not isinstance(found.get("task"), str):
        return None
    tokens, cost = found.get("tokens"), found.get("cost")
    return found["task"], Budget(
        tokens if type(tokens) is int else None,
        float(cost) if isinstance(cost, int | float) and type(cost) is not bool else None,
    )
