"""What the routes share: the runtime, its journal and store, the agent classes, the task
use cases (`TaskService`) and the open task event streams."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import Request

from mas.actors.agent import Agent
from mas.api.backlogs import Backlogs
from mas.api.problems import Problem
from mas.api.schemas import AgentOut
from mas.api.streams import TaskStreams
from mas.api.tasks import TaskService
from mas.config import Settings
from mas.persistence.dead_letters import DeadLetterArchive
from mas.persistence.journal import StoreJournal
from mas.persistence.store import AgentRecord, Store
from mas.runtime import Runtime

__all__ = ["MIN_WAIT", "Gateway", "gateway"]

MIN_WAIT = 0.001
"""Seconds: a `?wait=` shorter than this is no wait."""


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
    """The broker queues' depths, which new work for other nodes is checked against."""
    streams: TaskStreams = field(init=False)
    """Open task event streams: pushed by this journal's commits, one shared poll for the rest."""
    tasks: TaskService = field(init=False)
    """The task use cases the /tasks routes call."""
    dead_letters: DeadLetterArchive = field(init=False)
    """The cluster's dead letters, as the store keeps them."""

    def __post_init__(self) -> None:
        api = self.settings.api
        self.backlogs = Backlogs(self.runtime.transport, limit=api.max_queue_depth)
        self.tasks = TaskService(self.settings, self.runtime, self.journal, self.backlogs)
        self.dead_letters = DeadLetterArchive(self.store)
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

    def agent_out(self, record: AgentRecord) -> AgentOut:
        """An agent as the API shows it: its mailbox when hosted here, and whether it is live."""
        cell = self.runtime.local_cell(record.id)
        mailbox = len(cell.mailbox) if cell is not None else None
        return AgentOut.of(record, mailbox, stale_after=self.settings.heartbeat_ttl)


async def gateway(request: Request) -> Gateway:
    """FastAPI dependency: the Gateway of the app serving this request.

    A coroutine although it does not wait: FastAPI runs plain-function dependencies in a
    worker thread, a hop that costs more than the rest of a small request.
    """
    state: Gateway = request.app.state.gateway
    return state
