"""AgentHost: what agent cells and supervisors need from the runtime that hosts them.

The runtime (`ActorSystem`) is also the users' facade and the transport's node; a cell or a
supervisor sees only this protocol, so what they may call back into is written down in one
place (as `TransportNode` does for transports and `JournalNode` for journals), and a change
to the facade cannot quietly become a dependency of the drain loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from mas.actors.backoff import RetryPolicy
from mas.actors.clock import Clock
from mas.actors.counters import AgentCounters
from mas.actors.deadletters import DeadLetter
from mas.actors.dedupe import DedupeBudget
from mas.actors.journal import Journal
from mas.actors.transport import Delivery
from mas.config import Settings
from mas.messages import Message
from mas.observability.tracing import Tracing

if TYPE_CHECKING:
    from mas.actors.agent import Agent
    from mas.actors.cell import AgentCell
    from mas.actors.supervisor import Supervisor
    from mas.actors.system import ActorSystem

__all__ = ["AgentHost"]


class AgentHost(Protocol):
    """The runtime as its cells and supervisors see it."""

    settings: Settings
    clock: Clock
    journal: Journal | None
    retry_policy: RetryPolicy
    dedupe_half: int
    """Ids per generation of a cell's dedupe window (two generations are kept)."""
    dedupe: DedupeBudget
    """The bound on the ids all cells remember together (`trim_dedupe` past it)."""
    log_messages: bool
    """Log every handled message (DEBUG): checked once per message, so kept as a flag."""
    time_handlers: bool
    """Measure every handler run (metrics served, or messages logged)."""
    tracing: Tracing | None
    """OpenTelemetry spans, or None when tracing is off."""

    # Counters the metrics read; cells and supervisors only add to them.
    deferred: int
    parked: int
    cancelled: int

    @property
    def system(self) -> ActorSystem:
        """The runtime as its users see it: what `AgentContext.runtime` and refs hold."""

    def counters_for(self, agent_type: str) -> AgentCounters:
        """The counters every agent of `agent_type` on this node adds to."""

    # -- tasks and time ----------------------------------------------------------------------

    def trim_dedupe(self) -> None:
        """Drop idle cells' dedupe windows once what they remember is recorded (owned)."""

    def start_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task the runtime owns (cancelled at exit, its crash fails it)."""

    def start_drain(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a cell's drain loop as an owned task."""

    def drain_done(self, task: asyncio.Task[None] | None) -> None:
        """A drain task ended (the owner stops tracking it)."""

    def call_later(self, delay: float, job: Callable[[], Awaitable[None]]) -> None:
        """Run `job()` after `delay` seconds of the runtime's clock, as an owned task."""

    def stop_budget(self, limit: float) -> float:
        """`limit`, cut to what is left of the shutdown deadline."""

    def check_running(self) -> None:
        """Raise `RuntimeNotRunning` unless the runtime is running."""

    def fail(self, error: BaseException) -> None:
        """Fail the runtime: a root supervisor gave up, or a bug in an owned task."""

    # -- the registry ------------------------------------------------------------------------

    def register(self, cell: AgentCell) -> None:
        """Index a new agent (raises `DuplicateAgent`)."""

    async def unregister(self, cell: AgentCell) -> None:
        """Forget a stopped agent here and on the transport."""

    def register_supervisor(self, supervisor: Supervisor) -> None: ...

    def unregister_supervisor(self, supervisor: Supervisor) -> None: ...

    async def subscribe_cell(self, cell: AgentCell, cls: type[Agent]) -> None:
        """Make a started agent reachable through the transport and its topics."""

    async def unsubscribe_cell(self, cell: AgentCell) -> None:
        """Stop taking the agent's messages from the transport (it is stopping)."""

    # -- messages ----------------------------------------------------------------------------

    async def offer(self, cell: AgentCell, delivery: Delivery) -> None:
        """Put a delivery into the cell's mailbox, or defer it when it does not fit."""

    async def dispatch_result(
        self, cell: AgentCell, incoming: Message, result: object
    ) -> Message | None:
        """Route what a handler returned; the reply to an asker, if any."""

    def ensure_trace(self, message: Message) -> str:
        """The message's trace id, created on first need."""

    async def resend_reply(self, reply: Message) -> None:
        """Send a stored reply again (the asked message was a duplicate)."""

    async def notify(self, target: str, message: Message) -> None:
        """Send a runtime notice (death watch, error reply); a notice nobody takes is
        dead-lettered, never raised into the sender."""

    async def dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        *,
        agent_id: str | None = None,
        error: BaseException | None = None,
        attempts: int | None = None,
    ) -> None:
        """Record a dead letter, settle the delivery, and fail the asker if one waits."""

    async def keep_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a dead letter no delivery carries, where the transport keeps them."""

    def log_handled(self, cell: AgentCell, message: Message, duration: float) -> None:
        """Log one handled message (only called while `log_messages` is on)."""
