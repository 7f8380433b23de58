"""AgentCell: runs one agent — activation, sequential processing, failure capture.

A cell holds no task while its mailbox is empty: the first message activates a drain task
that handles messages one at a time and ends when the mailbox is empty again. A handler
failure is two independent decisions: the message is retried (or dead-lettered) by the
delivery, the agent is restarted (or not) by its supervisor.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from mas.actors.agent import Agent, AgentContext
from mas.actors.backoff import RetryPolicy
from mas.actors.deadletters import DeadLetter
from mas.actors.mailbox import Mailbox
from mas.actors.ref import AgentRef
from mas.actors.status import RUNNING, STOPPED, SUSPENDED
from mas.actors.workflow import (
    PARENT_KEY,
    RERUN_KEY,
    Parked,
    WorkflowRun,
    parked_asks,
    task_of,
)
from mas.errors import (
    AgentStartError,
    AgentStopped,
    ConfigError,
    MailboxFull,
    MasError,
    Rejected,
    ServiceUnavailable,
    WorkflowDiverged,
)
from mas.messages import Message

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from mas.actors.host import AgentHost
    from mas.actors.journal import Journal
    from mas.actors.supervisor import Restart, Supervisor
    from mas.actors.transport import Delivery

__all__ = ["AgentCell", "LocalDelivery"]

_log = structlog.get_logger("mas.cell")


AgentFactory = Callable[[], Agent]

UNREADABLE_RECORD_DELAY = 1.0
"""Seconds a redelivered message waits in the broker while the record cannot say whether it
was handled (the database is away)."""


class LocalDelivery:
    """A message delivered inside this process: settling it needs no broker."""

    __slots__ = ("attempt", "cell", "message")

    redelivered = False  # a local message is handed out once
    claimed_elsewhere = False

    def __init__(self, message: Message, cell: AgentCell, attempt: int = 1) -> None:
        self.message = message
        self.cell = cell
        self.attempt = attempt

    async def ack(self) -> None:
        return None

    def next_attempt(self) -> LocalDelivery:
        """The same delivery, one attempt later (subclasses keep what they carry)."""
        return LocalDelivery(self.message, self.cell, self.attempt + 1)

    async def retry(self, delay: float) -> None:
        again = self.next_attempt()
        self.cell.runtime.call_later(delay, lambda: self.cell.requeue(again))

    async def dead_letter(self, letter: DeadLetter) -> None:
        # The runtime recorded it; no broker delivery carries it, so the transport keeps it.
        await self.cell.runtime.keep_dead_letter(letter)

    async def release(self) -> bool:
        return False  # no other node holds this process's local messages

    async def defer(self, delay: float) -> None:
        # Held on this node (no broker holds a local message, or a topic copy alone): offered
        # to the same agent again after the delay.
        runtime = self.cell.runtime
        runtime.call_later(delay, lambda: runtime.offer(self.cell, self))


class AgentCell:
    """Owns one agent's mailbox, instance and lifecycle state."""

    __slots__ = (
        "_cancelling",
        "_idle_waiters",
        "_runs",
        "_seen",
        "_seen_old",
        "_task",
        "_watchers",
        "address",
        "agent_type",
        "attempt",
        "busy",
        "capabilities",
        "counters",
        "ctx",
        "current",
        "factory",
        "id",
        "idle_since",
        "instance",
        "mailbox",
        "rerun",
        "restart",
        "restarts",
        "retry",
        "runtime",
        "shutdown_timeout",
        "status",
        "stop_requested",
        "supervisor",
        "topics",
    )

    def __init__(
        self,
        runtime: AgentHost,
        supervisor: Supervisor,
        agent_id: str,
        agent_type: str,
        factory: AgentFactory,
        restart: Restart,
        mailbox: Mailbox[Message | Delivery],
        retry: RetryPolicy,
        shutdown_timeout: float,
        capabilities: tuple[str, ...] = (),
    ) -> None:
        self.runtime = runtime
        self.supervisor = supervisor
        self.id = agent_id
        self.address = f"agent:{agent_id}"
        self.agent_type = agent_type
        self.counters = runtime.counters_for(agent_type)
        self.capabilities = capabilities
        self.factory = factory
        self.restart: Restart = restart
        self.restarts = 0
        """Times its supervisor restarted it (a crash of it, or of a sibling it goes with)."""
        self.mailbox = mailbox
        self.retry = retry
        self.shutdown_timeout = shutdown_timeout
        self.ctx = AgentContext(self)
        self.instance: Agent | None = None
        self.status = SUSPENDED
        self.current: Message | None = None
        self.attempt = 0
        self.stop_requested = False
        self.rerun = False
        """The message being handled may have been handled before (set with a journal only)."""
        self.topics: list[str] | None = None
        self.busy = False  # a drain task exists (set by `activate` and the drain task only)
        self._task: asyncio.Task[None] | None = None
        self._seen: dict[str, Message | None] | None = None
        self._seen_old: dict[str, Message | None] | None = None
        self.idle_since = 0  # the dedupe budget's epoch when its last drain ended
        self._watchers: set[str] | None = None
        self._idle_waiters: list[asyncio.Future[None]] | None = None
        self._cancelling: str | None = None
        """The id of the message whose handler `cancel_handler` cancelled."""
        self._runs: dict[str, WorkflowRun] | None = None
        """Durable steps of messages handled with `ctx.step`/`ask`/`send` and not settled."""

    def __repr__(self) -> str:
        return f"AgentCell({self.id!r}, {self.status})"

    def ref(self) -> AgentRef:
        return AgentRef(self.runtime.system, self.id, self)

    @property
    def stopped(self) -> bool:
        return self.status is STOPPED

    @property
    def has_room(self) -> bool:
        """A message put now is taken without waiting and without dropping another one."""
        mailbox = self.mailbox
        return len(mailbox) < mailbox.capacity or mailbox.overflow == "drop_oldest"

    def add_watcher(self, address: str) -> None:
        if self._watchers is None:
            self._watchers = set()
        self._watchers.add(address)

    # -- receiving ---------------------------------------------------------------------------

    async def put(self, item: Message | Delivery) -> None:
        """Queue a message (waits when full under `block`); activates the agent if idle.

        A bare `Message` is a first local attempt (nothing to settle); anything that must be
        acknowledged, retried or counted comes wrapped in a `Delivery`.

        Raises:
            AgentStopped: the agent has stopped.
            MailboxFull: full, and the policy is `reject`.
        """
        # The fast path (`AgentRef.tell` has the same three lines): running, and room now.
        if self.status is RUNNING and self.mailbox.try_put(item):
            if not self.busy:
                self.activate()
            return
        if self.status is STOPPED:
            raise AgentStopped(self.id)
        dropped = await self.mailbox.put(item)
        if dropped is not None:
            await self.runtime.dead_letter(
                self.as_delivery(dropped), "mailbox_overflow", agent_id=self.id
            )
        if not self.busy and self.status is RUNNING:
            self.activate()

    async def offer(self, delivery: Delivery) -> bool:
        """Queue a delivery without ever waiting; False when the mailbox is full.

        For messages from the transport: one pump task feeds every agent of the node, so a
        full `block` mailbox must not hold it (head-of-line blocking across agents), and a
        message that does not fit can wait in the broker instead (`Delivery.defer`).
        `drop_oldest` makes room as `put` does; `block` and `reject` refuse.

        Raises:
            AgentStopped: the agent has stopped.
        """
        if self.status is STOPPED:
            raise AgentStopped(self.id)
        try:
            dropped = self.mailbox.put_nowait(delivery)
        except MailboxFull:
            return False
        if dropped is not None:
            await self.runtime.dead_letter(
                self.as_delivery(dropped), "mailbox_overflow", agent_id=self.id
            )
        if not self.busy and self.status is RUNNING:
            self.activate()
        return True

    def as_delivery(self, item: Message | Delivery) -> Delivery:
        if type(item) is Message or isinstance(item, Message):
            return LocalDelivery(item, self)
        return item

    async def requeue(self, delivery: Delivery) -> None:
        """Put a retried delivery back; it was admitted once, so capacity does not apply."""
        if self.status is STOPPED:
            await self.runtime.dead_letter(delivery, "agent_stopped", agent_id=self.id)
            return
        self.mailbox.put_force(delivery)
        if not self.busy and self.status is RUNNING:
            self.activate()

    def activate(self) -> None:
        """Start the drain task for what is queued. Callers check first that the agent is
        running and not `busy` (the send fast path does, without a call)."""
        self.busy = True
        self._task = self.runtime.start_drain(self._drain())

    # -- processing --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """The drain task: recall the dedupe window if needed, handle what is queued, end.

        An error that escapes the steps below is a bug in mas (or SystemExit/KeyboardInterrupt
        from a handler): it fails the runtime.
        """
        runtime = self.runtime
        seen = self._seen
        remembered = len(seen) + len(self._seen_old) if seen is not None else 0  # type: ignore[arg-type]
        try:
            if runtime.journal is not None and self._seen is None:
                await self._recall(runtime.journal)
            await self._handle_queued()
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                runtime.fail(exc)
            raise
        finally:
            self.busy = False
            # What this drain remembered counts against the process's dedupe budget: once
            # per drain, not per message.
            budget = runtime.dedupe
            seen = self._seen
            if seen is not None:
                budget.count += len(seen) + len(self._seen_old) - remembered  # type: ignore[arg-type]
            else:
                budget.count -= remembered
            self.idle_since = budget.epoch
            if budget.count > budget.trim_at:
                runtime.trim_dedupe()
            task, self._task = self._task, None
            runtime.drain_done(task)

    async def _handle_queued(self) -> None:
        """Take queued items one at a time and handle each, until the mailbox stays empty.

        Each item: skip it if it was handled already (`_should_handle`), note the start
        (`_record_start`), run the handler, then remember its id and settle it (`_settle`)
        or retry or dead-letter it (`_failed`). This loop is the per-message fast path, kept
        in one frame: a first-attempt local message costs a popleft, a dedupe lookup, the
        handler call and an insert into the dedupe window.
        """
        mailbox = self.mailbox
        runtime = self.runtime
        journal = runtime.journal
        tracing = runtime.tracing
        span: Span | None = None
        while self.status is RUNNING:
            item = mailbox.get_nowait()
            if item is None and (item := await self._linger()) is None:
                return
            # A bare Message is a first local attempt (the exact type first: the fast path).
            if type(item) is Message or isinstance(item, Message):
                message, delivery = item, None
            else:
                message, delivery = item.message, item
            seen = self._seen
            duplicate = seen is not None and (message.id in seen or message.id in self._seen_old)  # type: ignore[operator]
            if (
                duplicate
                or (delivery is not None and (delivery.claimed_elsewhere or delivery.redelivered))
            ) and not await self._should_handle(message, delivery, duplicate):
                continue
            instance = self.instance
            assert instance is not None  # RUNNING implies an instance
            self.current = message
            if journal is not None:
                self._record_start(journal, message, delivery)
            started = time.perf_counter() if runtime.time_handlers else 0.0
            if tracing is not None:
                attempt = 1 if delivery is None else delivery.attempt
                runtime.ensure_trace(message)  # a span that starts the trace takes its id
                span = tracing.handling(message, self.id, self.agent_type, attempt)
                token = tracing.attach(span)
            try:
                result = await instance.handle_message(message)
                reply = (
                    None if result is None else await runtime.dispatch_result(self, message, result)
                )
            except asyncio.CancelledError:
                if self._cancelling == message.id and self._cancel_taken():
                    # Its task was cancelled (`cancel_handler`): the message is done with.
                    await self._handler_cancelled(journal, message, delivery)
                    continue
                # Cancelled mid-handler (shutdown timeout): keep it, it was not handled.
                mailbox.put_front(item)
                self._run_ended(message, settled=False)
                raise
            except Parked as parked:
                if self._cancelling is not None:
                    self._cancel_taken()
                await self._park(message, delivery, parked)
            except Exception as exc:
                if self._cancelling is not None:
                    self._cancel_taken()  # the handler turned the cancellation into an error
                if span is not None:
                    tracing.failed(span, exc)  # type: ignore[union-attr]
                self._idle()
                if started:
                    self.counters.failed_durations.observe(time.perf_counter() - started)
                await self._failed(delivery or LocalDelivery(message, self), exc)
            else:
                # Succeeded (inlined: a call costs a tenth of this path): wake whoever waits
                # for that, remember the id (and reply).
                self.current = None
                if self._idle_waiters:
                    self._idle()
                if self._cancelling is not None:
                    self._cancel_taken()  # the handler swallowed the cancellation
                self._remember(message.id, reply)
                self.counters.succeeded += 1
                if self._runs:
                    self._run_ended(message, settled=True)
                if journal is not None or delivery is not None or started:
                    await self._settle(journal, message, delivery, reply, started)
            finally:
                if span is not None:
                    tracing.detach(token)  # type: ignore[union-attr]
                    span.end()
                    span = None
            if self.stop_requested:
                self.stop_requested = False
                await self.supervisor.child_exited(self)

    def cancel_handler(self, task_id: str) -> bool:
        """Cancel the handler running for task `task_id`, if this agent runs one (its task
        was cancelled): it sees `CancelledError` at its next await, and the message is
        settled without a retry. True when a handler was cancelled (or is being)."""
        current, task = self.current, self._task
        if current is None or task_of(current) != task_id or task is None or task.done():
            return False
        if self._cancelling != current.id:
            self._cancelling = current.id
            task.cancel()
        return True

    def _cancel_taken(self) -> bool:
        """Forget the cancellation `cancel_handler` asked for; False when another one (a
        shutdown's) is pending too."""
        self._cancelling = None
        task = asyncio.current_task()
        return task is None or task.uncancel() == 0

    async def _handler_cancelled(
        self, journal: Journal | None, message: Message, delivery: Delivery | None
    ) -> None:
        """The handler of a cancelled task ended by the cancellation: the message is
        recorded as handled (a redelivery does not run it again) and settled; the task's
        record already says `cancelled`."""
        self._idle()
        self._run_ended(message, settled=True)
        self._remember(message.id, None)
        self.runtime.cancelled += 1
        _log.info(
            "handler_cancelled",
            agent_id=self.id,
            message_id=message.id,
            task_id=task_of(message),
            trace_id=message.trace_id,
        )
        await self._settle(journal, message, delivery, None, 0.0)

    def workflow_run(self) -> WorkflowRun | None:
        """The durable steps of the message being handled (None outside a handler)."""
        current = self.current
        if current is None:
            return None
        runs = self._runs
        if runs is None:
            runs = self._runs = {}
        run = runs.get(current.id)
        if run is None:
            target = current.target
            handler = target if target is not None and not target.startswith("topic:") else None
            run = runs[current.id] = WorkflowRun(
                current.id,
                handler or self.address,
                rerun=self.rerun,
                parkable=handler is not None and self.runtime.journal is not None,
                parked_asks=parked_asks(current),
            )
        return run

    async def _park(self, message: Message, delivery: Delivery | None, parked: Parked) -> None:
        """The handler gave up its agent in a long durable wait: the journal keeps what
        wakes the message again (and acknowledges the delivery once it has), and the agent
        takes its next message. The message is not remembered as handled: it comes back."""
        self._idle()
        self._run_ended(message, settled=True)
        journal = self.runtime.journal
        assert journal is not None  # only a run with a journal parks (`WorkflowRun.parkable`)
        try:
            await journal.parked(self.id, message, delivery, parked.waits)
        except MasError as exc:
            # Nothing says what would wake it: it is handled again after a retry's delay,
            # and its steps' record lets that run go straight back to the wait.
            await self._failed(delivery or LocalDelivery(message, self), exc)
            return
        self.runtime.parked += 1
        _log.debug(
            "workflow_parked",
            agent_id=self.id,
            message_id=message.id,
            until=min(wait.until for wait in parked.waits),
            signals=[wait.signal for wait in parked.waits if wait.signal is not None],
            asks=sum(wait.ask is not None for wait in parked.waits),
        )

    def _run_ended(self, message: Message, *, settled: bool) -> bool:
        """A handler run ended: forget its steps once the message is settled, else number
        the next run's steps from the first again. True when the message had steps."""
        runs = self._runs
        run = runs.get(message.id) if runs else None
        if run is None:
            return False
        if settled and runs is not None:
            del runs[message.id]
        else:
            run.begin_attempt()
        return True

    async def _linger(self) -> Message | Delivery | None:
        """Wait one loop iteration with an empty mailbox; the item that came meanwhile, if any.

        A sender that is about to send again (an ask loop, a chat between agents) then
        reuses this drain task instead of paying for a new one; an idle agent still holds no
        task after that.
        """
        await asyncio.sleep(0)
        return self.mailbox.get_nowait() if self.status is RUNNING else None

    async def _should_handle(
        self, message: Message, delivery: Delivery | None, duplicate: bool
    ) -> bool:
        """For a duplicate, a redelivered message or one another node claimed: handle it here?

        False for a duplicate or one handled elsewhere (skipped as a duplicate), and when the
        record cannot say (it waits in the broker: handling it might do it twice, and what
        this node did could not be recorded anyway).
        """
        if duplicate or delivery is None:
            await self._duplicate(message, delivery)
            return False
        journal = self.runtime.journal
        handled = delivery.claimed_elsewhere or (
            journal is not None and await self._handled_elsewhere(journal, message.id)
        )
        if handled is None:
            self.runtime.deferred += 1
            await delivery.defer(UNREADABLE_RECORD_DELAY)
            return False
        if handled:
            await self._duplicate(message, delivery)
            return False
        return True

    def _record_start(self, journal: Journal, message: Message, delivery: Delivery | None) -> None:
        """Journal that a handler starts: the attempt, the trace, a task's `running` state."""
        self.attempt = delivery.attempt if delivery is not None else 1
        self.rerun = (
            delivery is not None
            and (delivery.redelivered or delivery.claimed_elsewhere or delivery.attempt > 1)
        ) or RERUN_KEY in message.metadata
        self.runtime.ensure_trace(message)  # every audited message can be found by trace
        metadata = message.metadata
        if "task_id" in metadata or PARENT_KEY in metadata:
            journal.task_running(message, self.id, self.attempt)

    async def _settle(
        self,
        journal: Journal | None,
        message: Message,
        delivery: Delivery | None,
        reply: Message | None,
        started: float,
    ) -> None:
        """Record the handled message (the journal acks after its commit), or ack it now;
        time it when handlers are timed (`started` is then when its handler started)."""
        if started:
            duration = time.perf_counter() - started
            self.counters.succeeded_durations.observe(duration)
            if self.runtime.log_messages:
                self.runtime.log_handled(self, message, duration)
        if journal is not None:
            await journal.handled(self.id, message, reply, delivery)
        elif delivery is not None:
            await delivery.ack()

    async def _handled_elsewhere(self, journal: Journal, message_id: str) -> bool | None:
        """A redelivered message another node may have handled (and died before the ack):
        whether it was, or None when the record cannot be read now."""
        try:
            found, reply = await journal.handled_elsewhere(message_id)
        except MasError as exc:
            # The store logs its outage once; this is the consequence, message by message.
            _log.debug("idempotency_lookup_failed", agent_id=self.id, error=str(exc))
            return None
        if found:
            self._remember(message_id, reply)
        return found

    async def _recall(self, journal: Journal) -> None:
        """Load the ids this agent handled before a restart of the process, or before the
        dedupe budget dropped its window (idempotency)."""
        half = self.runtime.dedupe_half
        if half == 0:
            return
        self._open_window()
        try:
            remembered = await journal.recall(self.id, half)
        except MasError as exc:
            _log.warning("idempotency_recall_failed", agent_id=self.id, error=str(exc))
            self.runtime.dedupe.dropped(self, self.forget_window())  # again next activation
            return
        for message_id, reply in remembered:
            self._remember(message_id, reply)

    def _open_window(self) -> dict[str, Message | None]:
        seen: dict[str, Message | None] = {}
        self._seen, self._seen_old = seen, {}
        self.runtime.dedupe.opened(self)
        return seen

    @property
    def remembered(self) -> int:
        """Message ids this agent remembers now (its dedupe window)."""
        return len(self._seen or ()) + len(self._seen_old or ())

    def forget_window(self) -> int:
        """Drop the remembered ids (the dedupe budget asks, the agent being idle); the next
        activation recalls them from the journal. Returns how many there were."""
        dropped = self.remembered
        self._seen = self._seen_old = None
        return dropped

    def _idle(self) -> None:
        self.current = None
        waiters = self._idle_waiters
        if waiters:
            self._idle_waiters = None
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _remember(self, message_id: str, reply: Message | None) -> None:
        # Two generations of ids: lookups and inserts stay O(1) and the window is bounded
        # between dedupe_window/2 and dedupe_window ids (the process's total: `_drain`).
        seen = self._seen
        runtime = self.runtime
        if seen is None:
            if runtime.dedupe_half == 0:
                return
            seen = self._open_window()
        seen[message_id] = reply
        if len(seen) >= runtime.dedupe_half:
            self._seen_old = seen
            self._seen = {}
            runtime.dedupe.opened(self)  # in use: last in line to be dropped

    async def _duplicate(self, message: Message, delivery: Delivery | None) -> None:
        seen, old = self._seen or {}, self._seen_old or {}
        # Not remembered here: another node claimed it (no reply of ours to resend).
        reply = seen[message.id] if message.id in seen else old.get(message.id)
        self.counters.duplicates += 1
        _log.info(
            "duplicate_message_skipped",
            agent_id=self.id,
            message_id=message.id,
            trace_id=message.trace_id,
            resent_reply=reply is not None,
        )
        journal = self.runtime.journal
        if journal is not None:
            journal.skipped(message)
        if reply is not None:
            # Answer whoever asks now: after a restart the asker is a different node.
            if message.reply_to is not None and message.reply_to != reply.target:
                reply = reply.evolve(target=message.reply_to)
            await self.runtime.resend_reply(reply)
        if delivery is not None:
            await delivery.ack()

    async def _failed(self, delivery: Delivery, exc: Exception) -> None:
        runtime = self.runtime
        message = delivery.message
        self.counters.failed += 1
        attempt = delivery.attempt
        _log.warning(
            "handler_failed",
            agent_id=self.id,
            agent_type=self.agent_type,
            message_id=message.id,
            message_type=message.type,
            trace_id=runtime.ensure_trace(message),
            attempt=attempt,
            max_attempts=self.retry.max_attempts,
            error_type=type(exc).__name__,
            error=str(exc),
        )
        rejected = isinstance(exc, Rejected | WorkflowDiverged)  # no attempt fares better
        if attempt < self.retry.max_attempts and not rejected:
            if self._run_ended(message, settled=False) and runtime.journal is not None:
                # Its finished steps reach the record before the delivery goes back: a
                # retry on another node must not redo them.
                try:
                    await runtime.journal.flush()
                except MasError as error:
                    # The retry still comes: a step it cannot read back runs again.
                    _log.warning("workflow_steps_not_recorded", agent_id=self.id, error=str(error))
            self.counters.retried += 1
            delay = self.retry.delay(attempt)
            if isinstance(exc, ServiceUnavailable) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)  # as the service asked
            await delivery.retry(delay)
        else:
            self.counters.dead_lettered += 1
            self._run_ended(message, settled=True)
            if isinstance(exc, Rejected):
                reason = "rejected"
            elif isinstance(exc, WorkflowDiverged):
                reason = "workflow_diverged"
            else:
                reason = "max_attempts"
            await runtime.dead_letter(
                delivery, reason, agent_id=self.id, error=exc, attempts=attempt
            )
        if isinstance(exc, Rejected | ServiceUnavailable):
            # The message (or a service it needed) was at fault, not the agent: it keeps its
            # state (no restart, nothing towards its supervisor's restart intensity) and
            # takes the next one.
            self.current = None
            return
        await self.supervisor.child_failed(self, exc)

    # -- lifecycle (driven by the supervisor) ------------------------------------------------

    async def start_instance(self) -> None:
        """Create a fresh agent from the factory and await its `start()`.

        Raises:
            AgentStartError: the factory or `start()` raised.
        """
        try:
            instance = self.factory()
        except Exception as exc:
            raise AgentStartError(f"creating agent {self.id!r} failed: {exc!r}") from exc
        if not isinstance(instance, Agent):
            raise ConfigError(
                f"the factory for agent {self.id!r} returned {type(instance).__name__}, "
                "not an Agent subclass instance"
            )
        instance.ctx = self.ctx
        try:
            await instance.start()
        except Exception as exc:
            raise AgentStartError(f"agent {self.id!r} failed in start(): {exc!r}") from exc
        self.instance = instance

    async def stop_instance(self) -> None:
        """Await the current instance's `stop()`; its errors are logged, not raised."""
        instance, self.instance = self.instance, None
        if instance is None:
            return
        try:
            await instance.stop()
        except Exception as exc:
            _log.warning(
                "agent_stop_failed", agent_id=self.id, error_type=type(exc).__name__, error=str(exc)
            )

    async def wait_idle(self, timeout: float) -> None:
        """Wait for the running handler (if any) to finish; cancel it after `timeout`."""
        if self.current is None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._idle_waiters is None:
            self._idle_waiters = []
        self._idle_waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            task = self._task
            if task is not None and task is not asyncio.current_task():
                _log.warning("handler_cancelled", agent_id=self.id, timeout=timeout)
                task.cancel()
                await asyncio.wait([task])

    async def suspend(self) -> None:
        """Stop handling (messages keep queueing) and stop the instance, for a restart."""
        if self.status is STOPPED:
            return
        self.status = SUSPENDED
        await self.wait_idle(self.runtime.stop_budget(self.shutdown_timeout))
        await self.stop_instance()

    async def resume(self) -> None:
        """Start a fresh instance and handle queued messages again.

        Raises:
            AgentStartError: the new instance failed to start (the cell stays suspended).
        """
        if self.status is STOPPED:
            return
        if self.instance is None:
            await self.start_instance()
        self.status = RUNNING
        if not self.busy and len(self.mailbox):
            self.activate()

    async def terminate(self, reason: str) -> None:
        """Stop for good: finish the handler, `stop()`, dead-letter what is queued, notify."""
        if self.status is STOPPED:
            return
        self.status = STOPPED
        runtime = self.runtime
        # Stop consuming at once: what arrives from now on, and what is handed back below,
        # goes to a standby node rather than to this one again.
        await runtime.unsubscribe_cell(self)
        await self.wait_idle(self.runtime.stop_budget(self.shutdown_timeout))
        await self.stop_instance()
        await runtime.unregister(self)
        runtime.dedupe.dropped(self, self.forget_window())
        for item in self.mailbox.close():
            delivery = self.as_delivery(item)
            if not await delivery.release():
                await runtime.dead_letter(delivery, "agent_stopped", agent_id=self.id)
        if runtime.journal is not None:
            runtime.journal.agent_stopped(self.id, self.agent_type, reason)
        log = _log.debug if reason == "shutdown" else _log.info
        log("agent_stopped", agent_id=self.id, agent_type=self.agent_type, reason=reason)
        watchers, self._watchers = self._watchers, None
        if watchers:
            from mas.actors.agent import Terminated

            notice = Terminated(self.id, reason)
            for watcher in watchers:
                await runtime.notify(watcher, notice.to_message(watcher))

    def describe(self) -> dict[str, Any]:
        """A snapshot for status pages and tests."""
        return {
            "id": self.id,
            "type": self.agent_type,
            "status": self.status,
            "mailbox": len(self.mailbox),
            "busy": self.busy,
            "supervisor": self.supervisor.id,
            "restarts": self.restarts,
        }
