"""A probe agent that records what it receives, for assertions without sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mas.actors.agent import Agent, HandlerResult
from mas.messages import Message

__all__ = ["Probe"]


class Probe:
    """Records messages received by the agents it makes; survives their restarts.

    `probe.agent(...)` is a factory to spawn: `await rt.spawn(probe.agent(), id="p")`.
    `await probe.wait_for(3)` returns once three messages arrived (or raises TimeoutError).
    """

    def __init__(self, *, reply: bool = False) -> None:
        self.messages: list[Message] = []
        self.reply = reply
        self._changed = asyncio.Event()

    def agent(self, agent_type: str = "probe") -> Callable[[], Agent]:
        probe = self

        class _ProbeAgent(Agent):
            type = agent_type

            async def handle_message(self, message: Message) -> HandlerResult:
                probe.messages.append(message)
                probe._changed.set()
                return message.reply(dict(message.payload)) if probe.reply else None

        _ProbeAgent.__qualname__ = f"Probe[{agent_type}]"
        return _ProbeAgent

    @property
    def types(self) -> list[str]:
        return [m.type for m in self.messages]

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Message]:
        """Wait until at least `count` messages were received; returns them all."""
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.messages)
