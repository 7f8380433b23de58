"""What the routes share: the runtime, its journal and store, the agent classes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from fastapi import Request

from mas.actors.agent import Agent
from mas.actors.runtime import Runtime
from mas.api.backlogs import Backlogs
from mas.api.problems import Problem
from mas.api.schemas import AgentOut
from mas.api.streams import TaskStreams
from mas.api.tasks import TaskService
from mas.config import Settings
from mas.errors import AgentStopped, StoreUnavailable, TransportError
from mas.persistence.journal import StoreJournal
from mas.persistence.store import AgentRecord, Store

__all__ = ["MIN_WAIT", "Gateway", "gateway"]

MIN_WAIT = 0.001
"""Seconds: a `?wait=` shorter than this is no wait."""

T = TypeVar("T")


@dataclass
class Gateway:
    """The gateway's view of the system, kept on `app.state.gateway`."""

    settings: Settings
    runtime: Runtime
    journal: StoreJournal
    agent_classes: dict[str, type[Agent]] = field(default_factory=dict)
    hosts_agents: bool = True
    """This process runs agents itself (`mas up`); `mas api` leaves them all to workers."""
    backlogs: Backlogs = field(init=False)
    streams: TaskStreams = field(init=False)
    """Open task event streams: pushed by this journal's commits, one shared poll for the rest."""
    tasks: TaskService = field(init=False)
    """The task use cases the /tasks routes call."""

    def __post_init__(self) -> None:
        api = self.settings.api
        self.tasks = TaskService(self)
        self.backlogs = Backlogs(self.runtime.transport, limit=api.max_queue_depth)
        self.streams = TaskStreams(
            self.store, max_per_caller=api.max_streams_per_caller, interval=api.stream_poll_interval
        )
        self.journal.status_listeners.append(self.streams.changed)

    async def close(self) -> None:
        """Stop what the gateway runs itself (the streams' poller); the runtime is not its."""
        if self.streams.changed in self.journal.status_listeners:
            self.journal.status_listeners.remove(self.streams.changed)
        await self.streams.close()

    @property
    def store(self) -> Store:
        return self.journal.store

    def applied_wait(self, wait: float) -> float:
        """The seconds a `?wait=` holds a request: none under a millisecond, which no answer
        could meet (a 504 for `wait=1e-157` helps nobody); the OpenAPI document's maximum,
        `MAS_API__MAX_WAIT`, is the most.

        Raises:
            Problem: 422 for a wait over `MAS_API__MAX_WAIT`.
        """
        limit = self.settings.api.max_wait
        if wait > limit:
            raise Problem(
                422,
                "Invalid Request",
                f"query.wait: at most {limit:g} seconds (MAS_API__MAX_WAIT), got {wait:g}",
            )
        return 0.0 if wait < MIN_WAIT else wait

    def check_writable(self) -> None:
        """Refuse new work at once while the database refuses writes, rather than queue it.

        Raises:
            StoreUnavailable: the journal's last write failed (503).
        """
        if self.journal.writer.failing:
            raise StoreUnavailable(
                f"the database at {self.store.url} is not accepting writes: try again shortly"
            )

    def check_sending(self) -> None:
        """Refuse new work for other nodes at once while the broker does not take messages.

        What was accepted before stays in the outbox and goes once the broker is back.

        Raises:
            TransportError: the transport is disconnected, or the outbox's last send failed
                (503).
        """
        if self.journal.relay.failing or not self.runtime.transport.ready:
            raise TransportError(
                "the message broker is not taking messages: try again shortly (tasks already "
                "accepted are kept and sent once it is back)"
            )

    async def check_agent(self, target: str) -> None:
        """Refuse work for an agent the registry shows stopped: nobody would ever take it.

        An agent whose node merely stopped heartbeating may come back; its work is accepted,
        and if it does not come back, its queue is retired and the work dead-lettered (see
        `StoreJournal.retire_gone`): it fails visibly, never stays pending.

        Raises:
            AgentStopped: the agent stopped (or was retired) and runs nowhere (409).
        """
        if not target.startswith("agent:"):
            return
        record = await self.store.get_agent(target.removeprefix("agent:"))
        if record is not None and record.status in ("stopped", "retired"):
            raise AgentStopped(record.id)

    async def check_new_work(self, target: str, *, local: bool) -> None:
        """Refuse new work for `target` before anything is stored: a local agent's mailbox
        must have room; for another node, the broker must take messages, the agent must not
        be gone, a queue must serve the target and not be too deep.

        Raises:
            MailboxFull, QueueFull: no room (429).
            TransportError: the broker is not taking messages (503).
            AgentStopped: the agent runs nowhere (409).
            UnknownAgent: nobody serves the target (404).
        """
        if local:
            self.runtime.check_room(target)
            return
        self.check_sending()
        await self.check_agent(target)
        await self.backlogs.check(target)

    async def recorded(self, task_id: str) -> None:
        """Wait until everything this node has recorded so far is committed.

        Raises:
            StoreUnavailable: not committed within `MAS_API__WRITE_TIMEOUT` (503); what was
                recorded stays queued and is written once the database answers.
        """
        timeout = self.settings.api.write_timeout
        try:
            await asyncio.wait_for(self.journal.writer.flush(), timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"the database at {self.store.url} did not record task {task_id!r} within "
                f"{timeout:g}s: it stays queued and is written once the database answers "
                f"(then GET /tasks/{task_id} shows it)"
            ) from None

    async def write_now(self, write: Coroutine[Any, Any, T], task_id: str) -> T:
        """A write the request makes itself (not through the journal), waited for at most
        `MAS_API__WRITE_TIMEOUT`, like every other write a client waits for.

        The write runs as a task the runtime owns: a driver blocked in a thread (SQLite's
        lock wait) cannot be cancelled, so the request stops waiting instead, and the write
        ends on its own (committed, or rolled back on the database's failure).

        Raises:
            StoreUnavailable: no answer within the timeout (503); the write may still land,
                so a retry under the same id is the way to find out.
        """
        timeout = self.settings.api.write_timeout
        running = self.runtime.start_task(_outcome(write))
        try:
            result, error = await asyncio.wait_for(asyncio.shield(running), timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"the database at {self.store.url} did not record task {task_id!r} within "
                f"{timeout:g}s: retry with the same id"
            ) from None
        if error is not None:
            raise error
        return cast(T, result)

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


async def gateway(request: Request) -> Gateway:
    """FastAPI dependency: the Gateway of the app serving this request.

    A coroutine although it does not wait: FastAPI runs plain-function dependencies in a
    worker thread, a hop that costs more than the rest of a small request.
    """
    state: Gateway = request.app.state.gateway
    return state


async def _outcome(write: Coroutine[Any, Any, T]) -> tuple[T | None, Exception | None]:
    """The write's result or error as a value: an abandoned write's failure must not crash
    the runtime that owns it (the store has logged the database's outage)."""
    try:
        return await write, None
    except Exception as exc:
        return None, exc
