"""Fault injection: agents that crash on cue, and deliveries that are dropped or duplicated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mas.actors.agent import Agent, HandlerResult
from mas.messages import Message

__all__ = ["Crash", "FaultPlan", "crashing"]


class Crash(RuntimeError):
    """The exception injected faults raise (so tests can tell it from real bugs)."""


def crashing(
    times: int,
    *,
    agent_type: str = "crasher",
    on_types: tuple[str, ...] | None = None,
    reply: bool = True,
    start_failures: int = 0,
) -> tuple[Callable[[], Agent], dict[str, int]]:
    """An agent factory whose handler raises `Crash` for its first `times` messages.

    Counters live outside the instances so they survive restarts; they are returned too:
    `handled`, `crashes`, `starts`, `stops`. With `start_failures`, the first restarts fail
    in `start()` as well. `on_types` limits crashes to those message types (poison messages).
    """
    counters = {"handled": 0, "crashes": 0, "starts": 0, "stops": 0}

    class _Crashing(Agent):
        type = agent_type

        async def start(self) -> None:
            counters["starts"] += 1
            if 1 < counters["starts"] <= 1 + start_failures:
                raise Crash("injected start failure")

        async def stop(self) -> None:
            counters["stops"] += 1

        async def handle_message(self, message: Message) -> HandlerResult:
            poisoned = on_types is None or message.type in on_types
            if poisoned and (on_types is not None or counters["crashes"] < times):
                counters["crashes"] += 1
                raise Crash(f"injected crash #{counters['crashes']}")
            counters["handled"] += 1
            return message.reply(dict(message.payload)) if reply else None

    return _Crashing, counters


@dataclass
class FaultPlan:
    """Rules applied to local deliveries by the test runtime: drop or duplicate by type."""

    drop: dict[str, int] = field(default_factory=dict)
    duplicate: dict[str, int] = field(default_factory=dict)
    dropped: list[Message] = field(default_factory=list)

    def drop_next(self, message_type: str, times: int = 1) -> None:
        """Lose the next `times` deliveries of `message_type` (as a broken network would)."""
        self.drop[message_type] = self.drop.get(message_type, 0) + times

    def duplicate_next(self, message_type: str, times: int = 1) -> None:
        """Deliver the next `times` messages of `message_type` twice (at-least-once)."""
        self.duplicate[message_type] = self.duplicate.get(message_type, 0) + times

    def copies(self, message: Message) -> int:
        """How many times to deliver `message`: 0 (drop), 1, or 2 (duplicate)."""
        if self.drop.get(message.type):
            self.drop[message.type] -= 1
            self.dropped.append(message)
            return 0
        if self.duplicate.get(message.type):
            self.duplicate[message.type] -= 1
            return 2
        return 1
