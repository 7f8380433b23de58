"""What the routes share: the runtime, the store, the agent classes, task completion events."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from mas.actors.agent import Agent
from mas.actors.runtime import Runtime
from mas.api.schemas import AgentOut
from mas.config import Settings
from mas.messages import Message, TaskResult
from mas.persistence.store import AgentRecord, Store

__all__ = ["Gateway", "gateway"]


@dataclass
class Gateway:
    """The gateway's view of the system, kept on `app.state.gateway`."""

    settings: Settings
    runtime: Runtime
    store: Store
    agent_classes: dict[str, type[Agent]] = field(default_factory=dict)
    _waiters: dict[str, list[asyncio.Event]] = field(default_factory=dict)

    async def on_task_ended(self, result: TaskResult, message: Message) -> None:
        """Task listener: wake the requests long-polling this task."""
        for event in self._waiters.pop(result.task_id, ()):
            event.set()

    def watch(self, task_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters.setdefault(task_id, []).append(event)
        return event

    def unwatch(self, task_id: str, event: asyncio.Event) -> None:
        events = self._waiters.get(task_id)
        if events is not None and event in events:
            events.remove(event)
            if not events:
                del self._waiters[task_id]

    def agent_out(self, record: AgentRecord) -> AgentOut:
        """An agent as the API shows it: its mailbox when hosted here, and whether it is live."""
        cell = self.runtime.local_cell(record.id)
        mailbox = len(cell.mailbox) if cell is not None else None
        return AgentOut.of(record, mailbox, stale_after=self.settings.heartbeat_ttl)

    def capability_types(self, capability: str) -> list[str]:
        """Agent types that declare `capability`, among the classes this gateway knows."""
        local = {cell.agent_type for cell in self.runtime.registry.cells.values()}
        return sorted(
            name
            for name, cls in self.agent_classes.items()
            if capability in cls.capabilities and name in local
        )


def gateway(request: Request) -> Gateway:
    """FastAPI dependency: the Gateway of the app serving this request."""
    state: Gateway = request.app.state.gateway
    return state
