"""ActorSystem: the registry of local agents, routing to them or to the transport, lifecycle.

The core of `mas.Runtime` (mas/runtime.py), which only adds the wiring from settings: an
ActorSystem is given its transport and journal, and imports no concrete one.

`async with Runtime() as rt:` starts the root supervisor and the transport; leaving the block
drains (in-flight handlers finish, queued messages are handled, pending retries fire) within
`shutdown_timeout`, stops agents in reverse start order and closes the transport. The timeout is
one deadline for the whole shutdown, not one per agent: handlers still running when it passes
are cancelled, so ten stuck agents cost one timeout, not ten (an orchestrator's grace period
is a total too). If the root
supervisor gives up, the body of the `async with` is cancelled and `SupervisorEscalation` is
raised from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from functools import lru_cache
from types import TracebackType
from typing import Any, Self

import anyio
import structlog

from mas.actors.agent import Agent
from mas.actors.backoff import RetryPolicy, backoff_delay
from mas.actors.cell import AgentCell, LocalDelivery
from mas.actors.clock import Clock, LoopClock
from mas.actors.counters import AgentCounters
from mas.actors.deadletters import DeadLetter, DeadLetters
from mas.actors.dedupe import DedupeBudget
from mas.actors.faults import DeliveryFaults
from mas.actors.journal import Journal
from mas.actors.ref import AgentRef
from mas.actors.registry import LocalRegistry
from mas.actors.replies import (
    ERROR_REPLY,
    TASK_RESULT_REPLY,
    AskDeadlines,
    AskExpired,
    PendingReply,
    error_from_reply,
    error_notice,
)
from mas.actors.status import STOPPED
from mas.actors.supervisor import Restart, Strategy, Supervisor
from mas.actors.tasks import TaskOwner
from mas.actors.transport import Delivery, Transport
from mas.actors.workflow import task_of
from mas.config import Settings
from mas.errors import (
    AgentStopped,
    AskTimeout,
    HandlerReturnError,
    MailboxFull,
    MasError,
    RuntimeNotRunning,
    UnknownAgent,
    UnknownCapability,
)
from mas.messages import Address, Message, TaskError, TaskResult, parse_address
from mas.observability import tracing
from mas.observability.logging import level_number
from mas.observability.tracing import Tracing

__all__ = ["ActorSystem"]

_log = structlog.get_logger("mas.runtime")

# Seconds the runtime's own tasks get after the deadline (cancelled handlers unwinding,
# death-watch notices), so a shutdown that used its whole budget still ends cleanly.
_CLOSE_GRACE = 0.5

# An ask to a capability nobody offers yet looks again after 20 ms, 40 ms, ... at most every
# 2 s, until its timeout: a provider that is starting (or whose node restarts) is found.
_PROVIDER_WAIT_BASE = 0.02
_PROVIDER_WAIT_MAX = 2.0

TaskListener = Callable[[TaskResult, Message], Awaitable[None]]


@lru_cache(maxsize=8192)
def _parse(target: str) -> Address:
    return parse_address(target)


class _FanoutDelivery:
    """One transport delivery shared by several local subscribers; settled when all are."""

    __slots__ = ("_parent", "_remaining")

    def __init__(self, parent: Delivery, count: int) -> None:
        self._parent = parent
        self._remaining = count

    async def done(self) -> None:
        self._remaining -= 1
        if self._remaining == 0:
            await self._parent.ack()


class _TopicDelivery(LocalDelivery):
    __slots__ = ("fanout",)

    def __init__(
        self, message: Message, cell: AgentCell, fanout: _FanoutDelivery, attempt: int = 1
    ) -> None:
        super().__init__(message, cell, attempt)
        self.fanout = fanout

    def next_attempt(self) -> _TopicDelivery:
        # A retried copy still belongs to the fan-out, so the broker's delivery is acked
        # once every subscriber has settled its copy.
        return _TopicDelivery(self.message, self.cell, self.fanout, self.attempt + 1)

    async def ack(self) -> None:
        await self.fanout.done()

    async def dead_letter(self, letter: DeadLetter) -> None:
        # The broker's delivery is acked once every copy is settled: the letter itself must
        # reach the transport's dead letters first.
        await self.cell.runtime.keep_dead_letter(letter)
        await self.fanout.done()

    async def release(self) -> bool:
        return False  # every other node got its own copy


class _RecoveredDelivery(LocalDelivery):
    """A message the outbox sends again (its node may have died with it half-handled),
    handed to an agent of this node: redelivered, as the broker marks a message it sends
    again, so the handler's node checks the record before handling it (another node may
    have handled it, or recorded some of its durable steps)."""

    __slots__ = ()

    redelivered = True

    def next_attempt(self) -> _RecoveredDelivery:
        return _RecoveredDelivery(self.message, self.cell, self.attempt + 1)


class ActorSystem:
    """Hosts agents, routes messages, supervises, and drains on shutdown.

    Users construct `mas.Runtime`, which builds the parts from settings; an ActorSystem is
    given them, so the core never imports a transport or the SQL stack.

    Args:
        settings: configuration.
        transport: carries messages to agents this node does not host.
        clock: overrides the event loop's clock (the test kit passes a manual one).
        node_id: this runtime's name among the nodes sharing a transport.
        journal: the persistent record (none: nothing is persisted).
        faults: drops or duplicates local deliveries (the test kit's `FaultPlan`).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport,
        clock: Clock | None = None,
        node_id: str | None = None,
        journal: Journal | None = None,
        faults: DeliveryFaults | None = None,
    ) -> None:
        self.settings = settings
        s = settings
        self._node_id = node_id or s.node_id or f"node-{uuid.uuid4().hex[:10]}"
        self.clock: Clock = clock if clock is not None else LoopClock()
        self.transport: Transport = transport
        self.dead_letters = DeadLetters()
        self.journal: Journal | None = journal
        self.retry_policy = RetryPolicy(
            s.retry.max_attempts, s.retry.base_delay, s.retry.max_delay, s.retry.jitter
        )
        self.dedupe_half = s.dedupe_window // 2
        self.dedupe = DedupeBudget(s.dedupe_budget)
        self.reply_address = f"reply:{self._node_id}"
        self.log_messages = False
        self.time_handlers = False
        # OpenTelemetry spans (None: off, and nothing of it imported).
        self.tracing: Tracing | None = tracing.active()
        # Plain integer counters: the metrics collector reads them, the hot path only adds.
        # What agents did is counted per agent type (`counters`); the totals are sums.
        self.counters: dict[str, AgentCounters] = {}
        # Deliveries handed back to wait in the broker: their mailbox was full, or the record
        # could not say whether a redelivered one was handled already.
        self.deferred = 0
        # Handlers that gave up their agent in a long durable wait (`ctx.sleep`, `ctx.signal`).
        self.parked = 0
        # Handlers cancelled because their task was (`cancel_task_handlers`).
        self.cancelled = 0
        self.tasks_completed = 0
        self._serialize = s.serialize_messages
        self._faults = faults
        self._defer_delay = s.mailbox.defer_delay
        self._max_bytes = s.message_max_bytes
        self.registry = LocalRegistry()
        self._cells = self.registry.cells  # the hot path's lookup, without an attribute hop
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self.tasks = TaskOwner(self.clock, self.fail)
        self._task_listeners: list[TaskListener] = []
        self._state = "new"
        self._accepting = False
        # True while a local tell may skip straight into a mailbox: running, no JSON
        # round trip, and no delivery faults to inject.
        self.fast_path = False
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: AskDeadlines | None = None
        # Loop time by which shutdown must be done; every agent's stop shares it.
        self._stop_deadline: float | None = None
        self._failed: asyncio.Event | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self.root: Supervisor | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def running(self) -> bool:
        return self._state == "running"

    @property
    def failure(self) -> BaseException | None:
        """Why the runtime failed (the root supervisor's escalation), if it did."""
        return self._failure

    async def start(self, *, root_strategy: Strategy = "one_for_one") -> None:
        """Start the root supervisor and the transport (`async with` calls this)."""
        if self._state != "new":
            raise RuntimeNotRunning("a Runtime can be started once; create a new one")
        self._loop = asyncio.get_running_loop()
        self.tasks.bind(self._loop)
        self._deadlines = AskDeadlines(self._loop)
        self._failed = asyncio.Event()
        s = self.settings
        self.root = Supervisor(self, "root", strategy=root_strategy)
        self.registry.add_supervisor(self.root)
        self.log_messages = level_number(s.log_level) <= logging.DEBUG
        self.time_handlers = self.time_handlers or self.log_messages
        # What starts here is closed again in reverse order if a later part fails (the
        # transport refuses): the journal's writer, its tasks and the database engine must
        # not outlive a start that raised.
        self._state = "starting"
        async with contextlib.AsyncExitStack() as unwind:
            unwind.push_async_callback(self._start_failed)
            self.journal = await self._open_journal()
            if self.journal is not None:
                unwind.push_async_callback(self.journal.close)
                await self.journal.open(self)
            unwind.push_async_callback(self.transport.close)  # a half-made connection too
            await self.transport.start(self)
            unwind.pop_all()
        self._state = "running"
        self._accepting = True
        # Off where every send must pass the runtime: to be serialized, faulted or traced.
        self.fast_path = not self._serialize and self._faults is None and self.tracing is None
        _log.info("runtime_started", node_id=self._node_id, transport=type(self.transport).__name__)

    async def _open_journal(self) -> Journal | None:
        """The journal to open at start (the composition root may build one here: opening a
        database is I/O, so it happens in `start`, whose failure closes it again)."""
        return self.journal

    async def _start_failed(self) -> None:
        """Last step of unwinding a start that raised: no task of it may go on running."""
        self._state = "stopped"  # not started again on this object: its parts were closed
        await self.tasks.cancel_all()

    async def __aenter__(self) -> Self:
        await self.start()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._raise_failure)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self.shutdown()
        assert self._task_group is not None and self._failed is not None
        self._failed.set()
        chosen: BaseException | None = None
        try:
            await self._task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # anyio wraps even a lone error of the body in a group: give the user the error.
            errors = group.exceptions
            failure = self._failure
            if failure is not None and failure in errors:
                chosen = failure
            elif len(errors) == 1:
                chosen = errors[0]
            else:
                raise
        if chosen is None:
            chosen = self._failure
        if chosen is not None:
            raise chosen

    async def _raise_failure(self) -> None:
        assert self._failed is not None
        await self._failed.wait()
        if self._failure is not None:
            raise self._failure

    def fail(self, error: BaseException) -> None:
        """Fail the runtime (root escalation or a runtime bug): raised to the embedding code."""
        if self._failure is None:
            self._failure = error
            _log.error(
                "runtime_failed",
                error_type=type(error).__name__,
                error=str(error),
                exc_info=error,
            )
        if self._failed is not None:
            self._failed.set()

    def check_running(self) -> None:
        if self._state != "running":
            raise RuntimeNotRunning(
                "the runtime is not running: use it inside 'async with Runtime() as rt:'"
            )

    async def shutdown(self, timeout: float | None = None) -> None:
        """Drain, stop agents in reverse order, close the transport.

        Stops accepting new external messages first; handlers may still send while draining.
        `timeout` bounds the whole shutdown (drain, every agent's stop, the runtime's tasks),
        plus a short grace for closing: handlers still running at the deadline are cancelled
        and their queued messages go to dead letters (`agent_stopped`).
        """
        if self._state != "running":
            return
        self._state = "stopping"
        self._accepting = False
        self.fast_path = False
        timeout = self.settings.shutdown_timeout if timeout is None else timeout
        loop = asyncio.get_running_loop()
        self._stop_deadline = loop.time() + timeout
        _log.info("runtime_stopping", node_id=self._node_id, timeout=timeout)
        # Stop taking deliveries, so the drain below ends; queued ones are still handled.
        await self.transport.pause()
        with anyio.move_on_after(timeout):
            await self.settle(timeout=None, advance_clock=True)
        self.tasks.flush_timers()
        assert self.root is not None
        await self.root.stop()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(RuntimeNotRunning("the runtime stopped before the reply"))
        if self.journal is not None:
            await self.journal.close()  # commit the audit and ack what it covers
        await self.transport.close()
        if self._deadlines is not None:
            self._deadlines.close()
        await self.tasks.wait_all(max(self.stop_budget(timeout), min(timeout, _CLOSE_GRACE)))
        self._state = "stopped"
        _log.info(
            "runtime_stopped",
            node_id=self._node_id,
            handled=self.handled,
            dead_letters=self.dead_letters.count,
        )

    def stop_budget(self, limit: float) -> float:
        """How long a stop may still wait: `limit`, cut to what is left of the shutdown deadline.

        Agents stop one after another (children before parents); without a shared deadline
        each would wait its own full timeout for a stuck handler, N agents N timeouts.
        """
        if self._stop_deadline is None:
            return limit
        left = self._stop_deadline - asyncio.get_running_loop().time()
        return max(0.0, min(limit, left))

    async def settle(self, *, timeout: float | None = 10.0, advance_clock: bool = True) -> None:
        """Wait until no handler runs, no mailbox holds a message and no retry is pending.

        With a manual clock and `advance_clock`, pending backoff timers are jumped to, so that
        everything that would eventually happen has happened when this returns; without
        `advance_clock`, it returns once only timers are left.

        Raises:
            TimeoutError: still busy after `timeout` seconds (a handler that never returns).
        """
        with anyio.fail_after(timeout):
            await self.tasks.settle(advance_clock=advance_clock)
            if self.journal is not None:
                await self.journal.flush()

    def start_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task the runtime owns: awaited at shutdown, errors fail it."""
        return self.tasks.start_task(coro)

    def trim_dedupe(self) -> None:
        """The agents remember more ids than `MAS_DEDUPE_BUDGET`: drop idle agents' windows
        once the journal has recorded what they remember (an owned task; see
        DedupeBudget)."""
        self.dedupe.hold()
        self.start_task(self._trim_dedupe())

    async def _trim_dedupe(self) -> None:
        """Up to three passes: an agent whose drain ended after a pass began is dropped by
        the next one, once what it handled is recorded too."""
        budget = self.dedupe
        try:
            for _ in range(3):
                epoch = budget.begin()
                if self.journal is not None:
                    await self.journal.flush()  # every id remembered before `epoch`
                else:
                    await asyncio.sleep(0)  # the drains under way take a turn
                if budget.trim(before=epoch):
                    break
        except MasError as exc:
            _log.debug("dedupe_trim_put_off", error=str(exc))
        finally:
            budget.put_off()

    def start_drain(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        return self.tasks.start_drain(coro)

    def drain_done(self, task: asyncio.Task[None] | None) -> None:
        self.tasks.drain_done(task)

    def call_later(self, delay: float, job: Callable[[], Awaitable[None]]) -> None:
        """TransportNode: run `job()` after `delay` seconds of the runtime's clock."""
        self.tasks.call_later(delay, job)

    # -- spawning and the registry -----------------------------------------------------------

    async def spawn(
        self,
        agent: type[Agent] | Callable[[], Agent],
        *,
        id: str | None = None,
        supervisor: Supervisor | None = None,
        restart: Restart = "permanent",
        **options: Any,
    ) -> AgentRef:
        """Start an agent (under the root supervisor unless `supervisor` is given).

        Raises:
            DuplicateAgent: `id` is already taken.
            AgentStartError: the agent's `start()` raised.
            RuntimeNotRunning: outside `async with Runtime()`.
        """
        self.check_running()
        parent = supervisor if supervisor is not None else self.root
        assert parent is not None
        return await parent.spawn(agent, id=id, restart=restart, **options)

    async def spawn_supervisor(
        self,
        id: str,
        *,
        strategy: Strategy = "one_for_one",
        max_restarts: int | None = None,
        period: float | None = None,
        parent: Supervisor | None = None,
    ) -> Supervisor:
        """Start a supervisor under the root (or `parent`); spawn agents with `sup.spawn`."""
        self.check_running()
        owner = parent if parent is not None else self.root
        assert owner is not None
        return await owner.spawn_supervisor(
            id, strategy=strategy, max_restarts=max_restarts, period=period
        )

    def register(self, cell: AgentCell) -> None:
        """Index a new agent (raises `DuplicateAgent`)."""
        self.registry.add(cell)

    def register_supervisor(self, supervisor: Supervisor) -> None:
        self.registry.add_supervisor(supervisor)

    def unregister_supervisor(self, supervisor: Supervisor) -> None:
        self.registry.remove_supervisor(supervisor)

    async def subscribe_cell(self, cell: AgentCell, cls: type[Agent]) -> None:
        """Make a freshly started agent reachable through the transport and its topics.

        The transport takes no more of the agent's messages at a time than its mailbox holds;
        the rest wait in the broker. Except for `drop_oldest`: such an agent wants the newest
        messages, and a broker holding the rest back would feed it the stale ones in order.
        """
        for pattern in cls.topics:
            await self.subscribe(cell, pattern)
        mailbox = cell.mailbox
        capacity = None if mailbox.overflow == "drop_oldest" else mailbox.capacity
        await self.transport.subscribe_agent(cell.id, cell.agent_type, capacity)

    @property
    def system(self) -> Self:
        """AgentHost: the runtime as users see it (this very object)."""
        return self

    async def unsubscribe_cell(self, cell: AgentCell) -> None:
        """AgentHost: stop taking the agent's messages from the transport (it stops)."""
        await self.transport.unsubscribe_agent(cell.id, cell.agent_type)

    async def unregister(self, cell: AgentCell) -> None:
        """Forget a stopped agent here and on the transport."""
        if self._cells.get(cell.id) is not cell:
            return
        for pattern in self.registry.remove(cell):
            await self.transport.unsubscribe_topic(pattern)
        await self.transport.unsubscribe_agent(cell.id, cell.agent_type)

    async def subscribe(self, cell: AgentCell, pattern: str) -> None:
        """Subscribe an agent to a topic pattern (`orders.*`, `audit.#`)."""
        parse_address(f"topic:{pattern}", allow_patterns=True)
        if self.registry.subscribe(cell, pattern):
            await self.transport.subscribe_topic(pattern)

    def local_cell(self, agent_id: str) -> AgentCell | None:
        return self._cells.get(agent_id)

    def routes_locally(self, target: str) -> bool:
        """Whether a message to `target` (an agent or type address) is handled on this node.

        Routing prefers local agents, so this holds until the agent stops.
        """
        address = _parse(target)
        if address.kind == "agent":
            cell = self._cells.get(address.value)
            return cell is not None and not cell.stopped
        return address.kind == "type" and self.registry.hosts_type(address.value)

    def check_room(self, target: str) -> None:
        """Refuse a message for a local agent (or type) whose mailbox has no room now.

        For callers that must not wait for room (an HTTP request answers 429 instead);
        `drop_oldest` mailboxes always take a message.

        Raises:
            MailboxFull: the agent, or every local agent of the type, is full.
        """
        address = _parse(target)
        if address.kind == "agent":
            cell = self._cells.get(address.value)
            cells = [cell] if cell is not None and not cell.stopped else []
        elif address.kind == "type":
            cells = self.registry.live_of_type(address.value)
        else:
            return
        if cells and not any(cell.has_room for cell in cells):
            raise MailboxFull(cells[0].id, cells[0].mailbox.capacity)

    def ref(self, agent_id: str) -> AgentRef:
        """A ref to an agent by id, hosted here or on another node."""
        parse_address(f"agent:{agent_id}")
        return AgentRef(self, agent_id, self._cells.get(agent_id))

    def agents(self) -> list[dict[str, Any]]:
        """A snapshot of every local agent (id, type, status, mailbox length)."""
        return [cell.describe() for cell in self._cells.values()]

    def agents_by_type(self) -> dict[str, tuple[int, int]]:
        """Per agent type: the local agents, and the messages waiting in their mailboxes."""
        found: dict[str, tuple[int, int]] = {}
        for cell in self._cells.values():
            agents, queued = found.get(cell.agent_type, (0, 0))
            found[cell.agent_type] = (agents + 1, queued + len(cell.mailbox))
        return found

    def supervisor(self, supervisor_id: str) -> Supervisor:
        try:
            return self.registry.supervisors[supervisor_id]
        except KeyError:
            raise UnknownAgent(f"supervisor:{supervisor_id}") from None

    async def stop_agent(self, agent_id: str) -> None:
        """Stop an agent for good (its supervisor does not restart it)."""
        cell = self._cells.get(agent_id)
        if cell is None or cell.stopped:
            return
        await cell.supervisor.stop_child(cell)

    def cancel_task_handlers(self, task_id: str) -> int:
        """Cancel the handlers running here for task `task_id` (it was cancelled); how many.

        Each sees `CancelledError` at its next await; its message is settled, not retried.
        """
        return sum(cell.cancel_handler(task_id) for cell in list(self._cells.values()))

    def handling_tasks(self) -> set[str]:
        """The tasks whose messages this node's agents are handling now."""
        return {
            task_id
            for cell in self._cells.values()
            if cell.current is not None and (task_id := task_of(cell.current)) is not None
        }

    def counters_for(self, agent_type: str) -> AgentCounters:
        """The counters every agent of `agent_type` on this node adds to."""
        counters = self.counters.get(agent_type)
        if counters is None:
            counters = self.counters[agent_type] = AgentCounters(agent_type)
        return counters

    def time_handler_runs(self) -> None:
        """Measure every handler run from now on (`AgentCounters` durations): the metrics
        turn this on; without them a handler run reads no clock."""
        self.time_handlers = True

    @property
    def handled(self) -> int:
        """Handler runs that succeeded on this node."""
        return sum(counters.succeeded for counters in self.counters.values())

    @property
    def failures(self) -> int:
        """Handler runs that raised on this node."""
        return sum(counters.failed for counters in self.counters.values())

    @property
    def restarts(self) -> int:
        """Agents restarted by their supervisors on this node."""
        return sum(counters.restarts for counters in self.counters.values())

    @property
    def duplicates(self) -> int:
        """Messages skipped because they were handled already."""
        return sum(counters.duplicates for counters in self.counters.values())

    def stats(self) -> dict[str, Any]:
        """Counters for metrics and the demo summary."""
        return {
            "agents": len(self._cells),
            "handled": self.handled,
            "failures": self.failures,
            "restarts": self.restarts,
            "duplicates": self.duplicates,
            "parked": self.parked,
            "cancelled": self.cancelled,
            "dead_letters": self.dead_letters.count,
            "tasks_completed": self.tasks_completed,
            "in_queue": sum(len(cell.mailbox) for cell in self._cells.values()),
        }

    # -- sending -----------------------------------------------------------------------------

    async def tell(self, target: str | AgentRef, message: Message) -> None:
        """Fire-and-forget to an address (`agent:`, `type:`, `topic:`) or a ref.

        Raises:
            InvalidAddress: `target` is not an address.
            UnknownAgent: nobody answers to it (the message is also dead-lettered).
            AgentStopped, MailboxFull: see `AgentRef.tell`.
            MessageTooLarge: over the size cap (when messages are serialized).
        """
        if not self._accepting:
            self._check_internal()
        if self.tracing is not None:
            message = self.tracing.stamp(message)  # the sender's span, current here
        if type(target) is AgentRef:
            try:
                await self._send_to_ref(target, message)
            except UnknownAgent as exc:
                self._refused(message, exc)
                raise
            return
        if not isinstance(target, str):
            raise MasError(f"tell needs an address string or an AgentRef, got {target!r}")
        message = message.addressed_to(target)
        try:
            await self._route(message)
        except UnknownAgent as exc:
            self._refused(message, exc)
            raise

    def _refused(self, message: Message, exc: UnknownAgent) -> None:
        """A send nobody serves, raised to its caller: counted as a dead letter here, and kept
        nowhere else (the caller holds the message and was told)."""
        reason = "no_capable_agent" if isinstance(exc, UnknownCapability) else "unknown_address"
        self.dead_letters.record(
            DeadLetter(message, reason, error_type=type(exc).__name__, error_message=str(exc))
        )

    def _check_internal(self) -> None:
        if self._state != "stopping" or self._current_cell_task() is None:
            raise RuntimeNotRunning(
                "the runtime is not accepting messages (not started, or shutting down)"
            )

    def _current_cell_task(self) -> asyncio.Task[Any] | None:
        task = asyncio.current_task()
        return task if self.tasks.owns(task) else None

    def ask(
        self, target: str | AgentRef, message: Message, *, timeout: float
    ) -> Coroutine[Any, Any, Message]:
        """Send and wait for the reply (see `AgentRef.ask` for the errors raised).

        A plain function returning the ask's coroutine: untraced, an ask costs no extra
        coroutine frame (1.6% of an ask's instructions, measured with callgrind).
        """
        if self.tracing is None:
            return self._ask(target, message, timeout)
        return self._traced_ask(self.tracing, target, message, timeout)

    async def _traced_ask(
        self, tracing: Tracing, target: str | AgentRef, message: Message, timeout: float
    ) -> Message:
        name = target.address if isinstance(target, AgentRef) else target
        with tracing.asking(name, message):
            return await self._ask(target, message, timeout)

    async def _ask(self, target: str | AgentRef, message: Message, timeout: float) -> Message:
        # `question` and `PendingReply.answer` in one frame: the common ask, kept short.
        asked = target
        if type(target) is str and target.startswith("capability:"):
            target, timeout = await self._provider_for(target, timeout)
        message, future = self._expect_reply(message, timeout)
        pending = self._pending
        try:
            if type(target) is AgentRef:
                await target.tell(message)
            else:
                await self.tell(target, message)
            reply = await future
        except AskExpired:
            name = asked.address if isinstance(asked, AgentRef) else asked
            raise AskTimeout(name, timeout) from None
        finally:
            if pending.get(message.id) is future:
                del pending[message.id]
        if reply.type == ERROR_REPLY:
            raise error_from_reply(reply)
        return reply

    async def question(
        self, target: str | AgentRef, message: Message, *, timeout: float
    ) -> PendingReply:
        """Send the question of an ask and return its pending reply, without waiting for it.

        For a caller that may stop waiting before the answer comes (a durable handler
        parks): cancelling a whole `ask` could cancel its question half-sent (while a
        `capability:` target still waits for a provider, say), and then no answer would
        ever come. The timeout runs from now; the errors of sending are `tell`'s.
        """
        name = target.address if isinstance(target, AgentRef) else target
        if self.tracing is None:
            return await self._question(name, target, message, timeout)
        with self.tracing.asking(name, message):
            return await self._question(name, target, message, timeout)

    async def _question(
        self, asked: str, target: str | AgentRef, message: Message, timeout: float
    ) -> PendingReply:
        if type(target) is str and target.startswith("capability:"):
            target, timeout = await self._provider_for(target, timeout)
        message, future = self._expect_reply(message, timeout)
        reply = PendingReply(self._pending, message.id, future, asked, timeout)
        try:
            if type(target) is AgentRef:
                await target.tell(message)
            else:
                await self.tell(target, message)
        except BaseException:
            reply.abandon()
            raise
        return reply

    async def _provider_for(self, capability: str, timeout: float) -> tuple[str, float]:
        """The `type:` address a `capability:` ask goes to (resolved once, here, so the
        question needs no second lookup) and the seconds its timeout has left."""
        agent_type, waited = await self._wait_for_provider(capability[11:], timeout)
        return f"type:{agent_type}", timeout - waited

    def _expect_reply(
        self, message: Message, timeout: float
    ) -> tuple[Message, asyncio.Future[Message]]:
        """The question to send (`message`, or a copy if it was sent before) and the future
        its reply resolves, registered and timed."""
        loop = self._loop
        if loop is None:
            self.check_running()  # raises: never started
        assert loop is not None and self._deadlines is not None
        future: asyncio.Future[Message] = loop.create_future()
        if message.target is not None or message.reply_to is not None:
            # Sent before (perhaps still queued somewhere): a sent message is never changed,
            # so this ask sends a copy, which `tell` addresses.
            message = message.copy()
            message.target = None
        message.reply_to = self.reply_address
        pending = self._pending
        pending[message.id] = future
        self._deadlines.add(timeout, future, len(pending))
        return message, future

    async def capability_types(self, capability: str) -> list[str]:
        """The agent types that offer `capability`, sorted: those this node runs, else those
        live anywhere in the cluster (from the journal's agent records; none without one).

        Raises:
            MasError: the record cannot be read now.
        """
        here = self.registry.types_offering(capability)
        if here or self.journal is None:
            return here
        live = await self.journal.live_capabilities()
        return sorted(name for name, offered in live.items() if capability in offered)

    async def capabilities(self) -> list[str]:
        """Every capability offered in the cluster, sorted: this node's agents', and those of
        the agents live anywhere (from the journal's agent records, when there is one).

        Raises:
            MasError: the record cannot be read now.
        """
        offered = self.registry.capabilities()
        if self.journal is not None:
            for names in (await self.journal.live_capabilities()).values():
                offered.update(names)
        return sorted(offered)

    async def _wait_for_provider(self, capability: str, timeout: float) -> tuple[str, float]:
        """Wait (backing off) until some agent offers `capability`: the type that does (the
        first in order, as `_route` picks) and the seconds it took.

        Raises:
            UnknownCapability: nobody offered it within `timeout` seconds
                (`no_capable_agent`).
            RuntimeNotRunning: the runtime stopped meanwhile.
        """
        clock = self.clock
        started = clock.time()
        attempt = 0
        while not (types := await self.capability_types(capability)):
            left = timeout - (clock.time() - started)
            if left <= 0:
                raise UnknownCapability(capability)
            attempt += 1
            await self.tasks.sleep(
                min(left, backoff_delay(attempt, _PROVIDER_WAIT_BASE, _PROVIDER_WAIT_MAX, 0.1))
            )
            if not self._accepting:
                self._check_internal()  # the runtime stopped meanwhile (it woke us)
        return types[0], clock.time() - started

    async def publish(self, topic: str, message: Message) -> None:
        """Send to every agent subscribed to a matching pattern, on every node."""
        key = topic[6:] if topic.startswith("topic:") else topic
        parse_address(f"topic:{key}")
        if not self._accepting:
            self._check_internal()
        message = message.addressed_to(f"topic:{key}")
        if self.tracing is not None:
            message = self.tracing.stamp(message)
        await self._publish_local(message, key, None)
        await self._to_broker(message)

    async def _send_to_ref(self, ref: AgentRef, message: Message) -> None:
        message = message.addressed_to(ref.address)
        cell = ref._cell
        if cell is None or cell.status is STOPPED:
            current = self._cells.get(ref.id)
            if current is None and cell is not None:
                raise AgentStopped(ref.id)
            cell = current
        if cell is not None:
            await self._deliver_local(cell, message)
        else:
            await self._send_remote(message)

    async def _deliver_local(self, cell: AgentCell, message: Message) -> None:
        copies = 1 if self._faults is None else self._faults.copies(message)
        if self._serialize:
            message = Message.from_json(message.to_json(max_bytes=self._max_bytes))
        for _ in range(copies):
            await cell.put(message)

    async def _route(self, message: Message, *, resent: bool = False) -> bool:
        """Deliver `message` to its target; True when an agent of this node took it."""
        target = message.target
        assert target is not None
        address = _parse(target)
        kind = address.kind
        if kind == "agent" or kind == "type":
            cell = (
                self._cells.get(address.value)
                if kind == "agent"
                else self.registry.pick(address.value)
            )
            if cell is not None:
                if resent:
                    await cell.put(_RecoveredDelivery(message, cell))
                else:
                    await self._deliver_local(cell, message)
                return True
        elif kind == "capability":
            types = await self.capability_types(address.value)
            if not types:
                raise UnknownCapability(address.value)
            # Resolved at the send: the agent gets a copy addressed to the type chosen.
            routed = message.copy()
            routed.target = f"type:{types[0]}"
            try:
                return await self._route(routed, resent=resent)
            except UnknownAgent as exc:
                if isinstance(exc, UnknownCapability):
                    raise
                # The provider's record is there, its queue not yet: it is starting. Said
                # as the capability's, so a task with a deadline waits for it.
                raise UnknownCapability(address.value) from exc
        elif kind == "reply":
            if address.value == self._node_id:
                self._resolve_reply(message)
                return True
        else:
            await self._publish_local(message, address.value, None)
            await self._to_broker(message)
            return False
        await self._to_broker(message, resent=resent)
        return False

    async def hand_over(self, message: Message, *, resent: bool = False) -> bool:
        """JournalNode: send what a commit decided to send (the outbox relay calls this).

        Also while the runtime stops: what was committed still goes. `resent` marks a
        message recovered from the outbox, which may have been sent before.

        Returns:
            True when an agent of this node took the message.

        Raises:
            UnknownAgent: nobody answers to its target.
            TransportError, MailboxFull, AgentStopped: not now; try again later.
            RuntimeNotRunning: the runtime is not running (any more).
        """
        state = self._state
        if state not in ("running", "stopping"):
            raise RuntimeNotRunning("the runtime is not running: the message stays in the outbox")
        try:
            return await self._route(message, resent=resent)
        except UnknownAgent:
            if state == "stopping":
                # Perhaps its agent was this node's, stopped by this shutdown: the message
                # stays in the outbox for the next node rather than failing its task.
                raise RuntimeNotRunning("the runtime is stopping") from None
            raise

    async def retire_agent(self, agent_id: str) -> bool:
        """JournalNode: an agent gone for good (stopped, or its node lost) gives up its queue.

        Returns False while the agent runs here or another node consumes its queue.

        Raises:
            TransportError: the broker could not be asked.
        """
        cell = self._cells.get(agent_id)
        if cell is not None and not cell.stopped:
            return False
        return await self.transport.retire_agent(agent_id)

    async def _send_remote(self, message: Message) -> None:
        await self._to_broker(message)

    async def _to_broker(self, message: Message, *, resent: bool = False) -> None:
        """Hand `message` to the transport: under a publish span when tracing, whose id the
        message carries to its handler."""
        tracing = self.tracing
        if tracing is None:
            await self.transport.send(message, resent=resent)
            return
        with tracing.publishing(message) as sent:
            await self.transport.send(sent, resent=resent)

    async def _send_on(self, message: Message, agent_id: str | None = None) -> bool:
        """Route a message no caller waits on (a handler's output, a stored reply, a notice);
        False when no node serves its address: then it is a dead letter, which nobody else
        would ever hear of, so the transport keeps it too.

        Raises:
            AgentStopped: its local agent stopped (the caller decides).
        """
        try:
            await self._route(message)
        except UnknownAgent as exc:
            await self.lost(
                DeadLetter(message, "unknown_address", agent_id, "UnknownAgent", str(exc))
            )
            return False
        return True

    async def _publish_local(self, message: Message, key: str, parent: Delivery | None) -> int:
        cells = self.registry.subscribers(key)
        fanout = _FanoutDelivery(parent, len(cells)) if parent is not None else None
        for cell in cells:
            copy = Message.from_json(message.to_json()) if self._serialize else message
            if fanout is not None:
                # A copy of a transport delivery: never wait for room (see `offer`).
                await self.offer(cell, _TopicDelivery(copy, cell, fanout))
                continue
            try:
                await cell.put(copy)
            except (AgentStopped, MailboxFull) as exc:
                reason = "agent_stopped" if isinstance(exc, AgentStopped) else "mailbox_overflow"
                await self.dead_letter(cell.as_delivery(copy), reason, agent_id=cell.id, error=exc)
        return len(cells)

    def _resolve_reply(self, message: Message) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(message)
        else:
            _log.debug(
                "late_reply_dropped", message_id=message.id, correlation_id=message.correlation_id
            )

    # -- receiving from the transport --------------------------------------------------------

    async def receive(self, delivery: Delivery) -> None:
        """TransportNode: a delivery for an address this node subscribed to."""
        message = delivery.message
        try:
            address = _parse(message.target or "")
        except MasError as exc:
            await self.dead_letter(delivery, "invalid_message", error=exc)
            return
        if address.kind == "reply":
            self._resolve_reply(message)
            await delivery.ack()
            return
        if address.kind == "topic":
            count = await self._publish_local(message, address.value, delivery)
            if count == 0:
                await delivery.ack()
            return
        if address.kind == "agent":
            cell = self._cells.get(address.value)
        elif address.kind == "capability":  # resolved by senders; from an older one, locally
            types = self.registry.types_offering(address.value)
            cell = self.registry.pick(types[0]) if types else None
        else:
            cell = self.registry.pick(address.value)
        if cell is None:
            await self.dead_letter(delivery, "unknown_address")
            return
        await self.offer(cell, delivery)

    async def offer(self, cell: AgentCell, delivery: Delivery) -> None:
        """Queue a delivery from the transport without waiting for room.

        One that does not fit is deferred (it waits in the broker, no attempt counted)
        rather than dead-lettered: a message waiting in the broker is not a failure, and
        waiting here would stall every other agent this node feeds.
        """
        try:
            taken = await cell.offer(delivery)
        except AgentStopped as exc:
            # Arrived while the agent was stopping: another node may host it.
            if not await delivery.release():
                await self.dead_letter(delivery, "agent_stopped", agent_id=cell.id, error=exc)
            return
        if not taken:
            self.deferred += 1
            await delivery.defer(self._defer_delay)

    # -- results of handlers -----------------------------------------------------------------

    def ensure_trace(self, message: Message) -> str:
        """The message's trace id, created on first need (kept off the no-op fast path)."""
        trace_id = message.trace_id
        if trace_id is None:
            # A message that starts a trace lends it its (random, unique) id: 32 hex digits,
            # a valid W3C trace id, at the cost of a string replace.
            candidate = message.id.replace("-", "")
            if len(candidate) != 32:
                candidate = uuid.uuid4().hex
            trace_id = message.trace_id = candidate
        return trace_id

    async def dispatch_result(
        self, cell: AgentCell, incoming: Message, result: object
    ) -> Message | None:
        """Route what a handler returned; returns the reply, kept for idempotent re-sends.

        Raises:
            HandlerReturnError: the handler returned something it may not.
        """
        if type(result) is Message or isinstance(result, Message):
            if (
                incoming.reply_to is None
                and incoming.sender is None
                and result.target is None
                and (task_id := incoming.task_id) is not None
            ):
                # A task from outside (the gateway) answered with a reply: nobody waits for
                # the reply itself (it had nowhere to go), the task does; its payload is
                # the task's result.
                await self._complete_task(
                    cell, incoming, TaskResult.succeeded(task_id, result.payload)
                )
                return None
            return await self._emit(cell, incoming, result)
        if isinstance(result, TaskResult):
            await self._complete_task(cell, incoming, result)
            if incoming.reply_to is None:
                return None
            reply = incoming.reply(result.to_dict(), type=TASK_RESULT_REPLY)
            reply.sender = cell.address
            return await self._emit(cell, incoming, reply)
        if isinstance(result, list) and all(isinstance(m, Message) for m in result):
            last_reply: Message | None = None
            for each in result:
                last_reply = await self._emit(cell, incoming, each) or last_reply
            return last_reply
        raise HandlerReturnError(
            f"agent {cell.id!r} ({type(cell.instance).__qualname__}) returned "
            f"{type(result).__name__} from handle_message: return None, a Message, a TaskResult "
            "or a list of Messages"
        )

    async def _emit(self, cell: AgentCell, incoming: Message, out: Message) -> Message | None:
        if self.tracing is not None:
            out = self.tracing.stamp(out)  # the handler's span (what it returned is new)
        if out.sender is None:
            out.sender = cell.address
        if out.trace_id is None:
            out.trace_id = self.ensure_trace(incoming)
        if out.target is None:
            destination = incoming.reply_to or incoming.sender
            if destination is None:
                if out.correlation_id == incoming.id:
                    return None  # a reply to a tell from outside: nobody is waiting for it
                await self.lost(DeadLetter(out, "unknown_address", agent_id=cell.id))
                return None
            out.target = destination
            if out.correlation_id is None:
                out.correlation_id = incoming.id
        is_reply = out.correlation_id == incoming.id and out.target == incoming.reply_to
        if is_reply and self.journal is not None:
            self.journal.replied(out)
        try:
            await self._send_on(out, cell.id)  # a dead letter when nobody took it
        except AgentStopped as exc:
            await self.lost(
                DeadLetter(out, "agent_stopped", agent_id=exc.agent_id, error_type="AgentStopped")
            )
        # A reply is kept (remembered, recorded) even when its asker was gone: the question
        # asked again, from wherever it comes now (a re-run of the asking workflow on another
        # node), is answered from it rather than left to time out.
        return out if is_reply else None

    def add_task_listener(self, listener: TaskListener) -> None:
        """Call `listener(result, message)` whenever a task ends on this node.

        A handler's TaskResult ends it; so does its message going to dead letters, which
        the listener sees as a failed TaskResult whose error type is the dead-letter reason.
        """
        self._task_listeners.append(listener)

    async def _complete_task(self, cell: AgentCell, incoming: Message, result: TaskResult) -> None:
        self.tasks_completed += 1
        if self.journal is not None:
            self.journal.task_finished(result, incoming, cell.attempt)
        _log.info(
            "task_completed",
            task_id=result.task_id,
            status=result.status,
            agent_id=cell.id,
            message_id=incoming.id,
            trace_id=self.ensure_trace(incoming),
        )
        for listener in self._task_listeners:
            await listener(result, incoming)

    async def resend_reply(self, reply: Message) -> None:
        """Send a stored reply again (a duplicate request arrived)."""
        try:
            await self._send_on(reply)
        except AgentStopped:
            _log.debug("stored_reply_undeliverable", message_id=reply.id)

    async def notify(self, target: str, message: Message) -> None:
        """Best-effort system message (death watch); the watcher may be gone."""
        try:
            await self._send_on(message)
        except AgentStopped:
            _log.debug("notice_undeliverable", target=target, message_type=message.type)

    async def lost(self, letter: DeadLetter) -> None:
        """A dead letter no delivery carries: recorded here and kept by the transport."""
        self.dead_letters.record(letter)
        await self.keep_dead_letter(letter)

    async def keep_dead_letter(self, letter: DeadLetter) -> None:
        """Hand a dead letter no transport delivery carries to the transport (RabbitMQ:
        `agents.dead_letter`), so the cluster's dead letters are all in one place.

        Never raises (but cancellation): it runs in drain tasks and settlements, and a broker
        that cannot take it now must not fail the agent or the runtime; the in-memory record
        stays and the failure is logged.
        """
        try:
            await self.transport.dead_letter(letter)
        except Exception as exc:  # a second record of what is kept already: never fatal
            _log.error(
                "dead_letter_not_kept",
                message_id=letter.message.id,
                trace_id=letter.message.trace_id,
                agent_id=letter.agent_id,
                reason=letter.reason,
                error_type=type(exc).__name__,
                error=str(exc),
            )

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
        message = delivery.message
        letter = DeadLetter(
            message,
            reason,
            agent_id,
            type(error).__name__ if error is not None else None,
            str(error) if error is not None else None,
            attempts if attempts is not None else delivery.attempt,
        )
        self.dead_letters.record(letter)
        if self.journal is not None:
            self.journal.dead_lettered(letter)
        await delivery.dead_letter(letter)
        task_id = task_of(message)
        if task_id is not None and self._task_listeners:
            failed = TaskResult.failed(
                task_id,
                TaskError(letter.error_type or reason, letter.error_message or reason),
            )
            for listener in self._task_listeners:
                await listener(failed, message)
        notice = error_notice(letter)
        if notice is not None:
            await self.notify(str(notice.target), notice)

    def log_handled(self, cell: AgentCell, message: Message, duration: float) -> None:
        structlog.get_logger("mas.cell").debug(
            "message_handled",
            agent_id=cell.id,
            message_id=message.id,
            message_type=message.type,
            trace_id=self.ensure_trace(message),
            duration=round(duration, 6),
            status="succeeded",
        )
