"""DedupeBudget: a bound on the message ids all agents of a process remember together.

Each agent remembers the ids it handled (two generations of up to `MAS_DEDUPE_WINDOW / 2`
ids, with the reply it gave when it was asked) so that a duplicate is not handled twice.
That bounds one agent, not a process hosting 100,000 of them. The budget counts every id
remembered; past `MAS_DEDUPE_BUDGET` the runtime trims (`ActorSystem.trim_dedupe`): once
the journal has committed what was handled so far, it drops the windows of agents idle since
before (their last drain ended earlier), those that opened or refreshed theirs longest ago
first, until a quarter of the budget is free. The idempotency guarantee stays with the
journal: every id dropped is recorded, and an agent whose window was dropped recalls its
recent ids from the store at its next activation, as after a restart of the process
(without a journal, its earlier ids are forgotten). An agent refreshes its place each time
a generation of its window fills, so busy agents keep theirs.
"""

from __future__ import annotations

import sys
from typing import Protocol

__all__ = ["DedupeBudget", "Remembers"]


class Remembers(Protocol):
    """What the budget needs of an agent (`AgentCell`)."""

    @property
    def busy(self) -> bool:
        """A drain of it runs (what it handles may not be recorded yet)."""
        ...

    @property
    def idle_since(self) -> int:
        """The budget's epoch when its last drain ended."""
        ...

    @property
    def remembered(self) -> int:
        """How many ids it remembers now."""
        ...

    def forget_window(self) -> int:
        """Drop the remembered ids; how many there were."""
        ...


class DedupeBudget:
    """Counts remembered ids; `trim(before)` drops idle agents' windows past the limit."""

    __slots__ = ("count", "epoch", "limit", "trim_at", "windows")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0  # ids remembered by every agent, as of their last drains' ends
        self.trim_at = limit  # a trim is due when `count` passes this (none while one runs)
        self.epoch = 0  # advanced by each trim: what agents remembered before it
        self.windows: dict[Remembers, None] = {}  # agents with a window, oldest first

    def opened(self, agent: Remembers) -> None:
        """`agent` started remembering (or filled a generation): it goes last in line."""
        self.windows.pop(agent, None)
        self.windows[agent] = None

    def dropped(self, agent: Remembers, remembered: int) -> None:
        """`agent` let go of its window of `remembered` ids (it stopped, or its recall
        failed and will be tried again)."""
        self.windows.pop(agent, None)
        self.count -= remembered

    def hold(self) -> None:
        """A trim is under way: no other is due until `put_off`."""
        self.trim_at = sys.maxsize

    def begin(self) -> int:
        """A pass of the trim starts: the epoch whose earlier ids the journal is about to
        commit."""
        self.epoch += 1
        return self.epoch

    def trim(self, before: int) -> bool:
        """Drop, oldest first, the windows of agents idle since before epoch `before`
        began, until a quarter of the limit is free; whether it is. The count is made
        exact first (agents add theirs at the end of a drain)."""
        windows = list(self.windows)
        self.count = sum(agent.remembered for agent in windows)
        target = self.limit - self.limit // 4
        for agent in windows:
            if self.count <= target:
                break
            if agent.busy or agent.idle_since >= before:
                continue
            del self.windows[agent]
            self.count -= agent.forget_window()
        return self.count <= target

    def put_off(self) -> None:
        """The trim is over: none before the limit is passed again, or, if busy agents hold
        more than that, before another quarter was remembered (a process over its budget
        then does not scan its agents at every message)."""
        self.trim_at = max(self.limit, self.count + self.limit // 4)
