"""The Agent base class users subclass, and the AgentContext it talks to the runtime through."""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

import structlog

from mas.actors.backoff import backoff_delay
from mas.actors.budgets import BUDGET_KEY
from mas.actors.mailbox import Overflow
from mas.actors.replies import ERROR_REPLY, PendingReply, error_from_reply
from mas.actors.workflow import (
    CREATED_BY_KEY,
    PARENT_KEY,
    WAKES_KEY,
    Parked,
    StepKind,
    Wait,
    WorkflowRun,
    as_json,
    marked_rerun,
    task_of,
)
from mas.errors import AskTimeout, ConfigError, MasError, SignalTimeout, UsageError
from mas.messages import Message, TaskResult

if TYPE_CHECKING:
    from mas.actors.cell import AgentCell
    from mas.actors.journal import Journal
    from mas.actors.ref import AgentRef
    from mas.actors.system import ActorSystem

__all__ = ["Agent", "AgentContext", "HandlerResult", "Terminated"]

HandlerResult = Message | TaskResult | list[Message] | None
T = TypeVar("T")

_RECORD_POLL_FIRST = 0.2
_RECORD_POLL_MAX = 2.0
"""Seconds between looks for a receiver's recorded answer to a re-sent ask (doubling)."""

_SIGNAL_POLL_FIRST = 0.05
_SIGNAL_POLL_MAX = 1.0
"""Seconds between reads of the record while a handler waits for a signal (doubling)."""

_TYPE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


class Agent:
    """Subclass this: set `type`, implement `handle_message`, optionally `start`/`stop`.

    One instance handles one message at a time. A new instance is created (and `start()`
    awaited) on every restart, so state that must survive a crash belongs in a store, not in
    attributes. `self.ctx` is set before `start()` runs.
    """

    type: ClassVar[str] = "agent"
    capabilities: ClassVar[tuple[str, ...]] = ()
    topics: ClassVar[tuple[str, ...]] = ()
    mailbox_capacity: ClassVar[int | None] = None
    overflow: ClassVar[Overflow | None] = None
    max_attempts: ClassVar[int | None] = None

    ctx: AgentContext

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" not in cls.__dict__:
            cls.type = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        if not isinstance(cls.type, str) or not _TYPE_RE.fullmatch(cls.type):
            raise ConfigError(
                f"{cls.__qualname__}.type = {cls.type!r} is not a valid agent type: use letters, "
                "digits, _ . - starting with a letter or _"
            )

    @property
    def id(self) -> str:
        """This agent's id (`agent:<id>` addresses it)."""
        return self.ctx.id

    async def start(self) -> None:
        """Called once per activation (spawn and every restart) before any message."""

    async def stop(self) -> None:
        """Called when the agent stops or before it is restarted; release resources here."""

    async def handle_message(self, message: Message) -> HandlerResult:
        """Handle one message; return None, a Message, a TaskResult or a list of Messages."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement handle_message")


class Terminated:
    """Delivered to watchers when a watched agent stops: `Terminated.from_message(m)`."""

    TYPE: ClassVar[str] = "mas.terminated"

    __slots__ = ("agent_id", "reason")

    def __init__(self, agent_id: str, reason: str) -> None:
        self.agent_id = agent_id
        self.reason = reason

    def to_message(self, watcher: str) -> Message:
        return Message(
            self.TYPE,
            {"agent_id": self.agent_id, "reason": self.reason},
            sender=f"agent:{self.agent_id}",
            target=watcher,
        )

    @classmethod
    def from_message(cls, message: Message) -> Terminated:
        return cls(str(message.payload["agent_id"]), str(message.payload["reason"]))


class AgentContext:
    """What an agent can do: send, ask, publish, spawn, watch, subscribe, stop, log.

    Messages sent while handling a message carry its trace_id (created on first need).
    """

    __slots__ = ("_cell", "_system")

    def __init__(self, cell: AgentCell) -> None:
        self._cell = cell
        self._system = cell.runtime.system  # the facade agents send through

    @property
    def id(self) -> str:
        return self._cell.id

    @property
    def address(self) -> str:
        return self._cell.address

    @property
    def runtime(self) -> ActorSystem:
        return self._system

    @property
    def self_ref(self) -> AgentRef:
        return self._cell.ref()

    @property
    def message(self) -> Message | None:
        """The message being handled right now, if any."""
        return self._cell.current

    @property
    def log(self) -> Any:
        """A structlog logger bound to this agent and the message being handled."""
        cell = self._cell
        bound = structlog.get_logger("mas.agent").bind(agent_id=cell.id, agent_type=cell.agent_type)
        current = cell.current
        if current is not None:
            bound = bound.bind(message_id=current.id, trace_id=cell.runtime.ensure_trace(current))
        return bound

    def _outgoing(self, message: Message) -> Message:
        """`message` with this agent as its sender and the current trace, when unset.

        A message already sent (forwarded, say) may still wait in another agent's mailbox:
        it is never changed, the fields are filled in on a copy.
        """
        current = self._cell.current
        fill_sender = message.sender is None
        fill_trace = message.trace_id is None and current is not None
        if not (fill_sender or fill_trace):
            tracing = self._cell.runtime.tracing
            return message if tracing is None else tracing.stamp(message)
        if message.target is not None:
            message = message.copy()
        if fill_sender:
            message.sender = self._cell.address
        if fill_trace and current is not None:
            message.trace_id = self._cell.runtime.ensure_trace(current)
        tracing = self._cell.runtime.tracing
        return message if tracing is None else tracing.stamp(message)

    def send(self, target: str | AgentRef, message: Message) -> Coroutine[Any, Any, None]:
        """Fire-and-forget to an address or ref (raises `UnknownAgent` when nobody answers).

        Inside a handler this is a durable step: the message gets an id derived from the
        handled message's and the step's number, so a re-run of the handler sends it with
        the same id (receivers drop the copy) or, once recorded, not at all.
        """
        run = self._cell.workflow_run()
        if run is None:
            return self._system.tell(target, self._outgoing(message))
        return self._durable_send(run, run.take_seq(), target, message)

    async def _durable_send(
        self, run: WorkflowRun, seq: int, target: str | AgentRef, message: Message
    ) -> None:
        name = _address_of(target)
        if await run.recorded(self._cell.runtime.journal, seq, name, "send") is not None:
            return
        await self._system.tell(target, await self._child(run, seq, message))
        self._finished(run, seq, name, "send", None)

    def ask(
        self, target: str | AgentRef, message: Message, timeout: float
    ) -> Coroutine[Any, Any, Message]:
        """Request/reply from inside a handler; raises `AskTimeout` or the remote error
        (`UsageError` at once for an ask to this agent itself).

        A durable step inside a handler: the reply is recorded, and a re-run of the handler
        gets it back at once instead of asking again (the question keeps its derived id, so
        a re-run that asks before the reply was recorded is answered from the receiver's
        record rather than handled twice). An ask whose timeout is longer than
        `MAS_WORKFLOW__PARK_AFTER` parks the handler when no answer came by then, as a long
        `sleep` does: the commit recording the answer wakes it (on any node), or the
        timeout does, counted from the first ask.
        """
        if _address_of(target) == self._cell.address:
            raise UsageError(
                f"agent {self._cell.id!r} asked itself: it handles one message at a time, "
                "so the question would wait behind the handler asking it until the ask timed "
                "out (send to itself, or ask another agent)"
            )
        run = self._cell.workflow_run()
        if run is None:
            return self._system.ask(target, self._outgoing(message), timeout=timeout)
        return self._durable_ask(run, run.take_seq(), target, message, timeout)

    async def _durable_ask(
        self, run: WorkflowRun, seq: int, target: str | AgentRef, message: Message, timeout: float
    ) -> Message:
        name = _address_of(target)
        journal = self._cell.runtime.journal
        record = await run.recorded(journal, seq, name, "ask")
        if record is not None:
            return Message.from_dict(record.result)
        park_after = self._park_after()
        until = run.parked_asks.get(seq)
        if until is None:
            until = time.time() + timeout
            left = timeout
        else:
            # This run is the wake-up of a handler that parked on this ask: the answer the
            # receiver recorded meanwhile, or the time the ask has left.
            answer = run.answers.get(seq)
            if answer is not None:
                if answer.type == ERROR_REPLY:
                    raise error_from_reply(answer)
                self._finished(run, seq, name, "ask", answer.to_dict())
                return answer
            left = until - time.time()
            if left <= 0:
                raise AskTimeout(name, timeout)
            if run.parkable and left > park_after:
                # Asked already (the outbox or the broker holds the question): wait again
                # without asking again.
                raise Parked([Wait(until, ask=seq, asked=run.child_id(seq))])
        parks = run.parkable and journal is not None and left > park_after
        child = await self._child(run, seq, message, wakes=parks)
        # Sent in full before any wait is cut short: a parked handler is woken by the answer
        # to a question that was asked.
        question = await self._system.question(target, child, timeout=left)
        try:
            if run.sends_again and journal is not None:
                answering = self._answer_or_record(question, child.id, journal)
            else:
                answering = question.answer()
            if parks:
                wait = Wait(until, ask=seq, asked=child.id)
                reply = await _reply_or_park(answering, park_after, wait)
            else:
                reply = await answering
        finally:
            question.abandon()
        self._finished(run, seq, name, "ask", reply.to_dict())
        return reply

    async def _answer_or_record(
        self, question: PendingReply, child_id: str, journal: Journal
    ) -> Message:
        """The answer to a question asked again for a re-run: the earlier run may have
        asked it already.

        The receiver may be handling the earlier copy right now (this copy is then skipped
        as a duplicate) and answer it to the earlier run's node, perhaps gone: so while
        waiting for the reply, look for the receiver's record of its answer too (backing
        off), and take whichever comes first.
        """
        answer = asyncio.ensure_future(question.answer())
        try:
            attempt = 0
            while not answer.done():
                attempt += 1
                delay = backoff_delay(attempt, _RECORD_POLL_FIRST, _RECORD_POLL_MAX, 0.1)
                await asyncio.wait([answer], timeout=delay)
                if answer.done():
                    break
                try:
                    found, recorded = await journal.handled_elsewhere(child_id)
                except MasError:
                    continue  # the record cannot say now: the reply may still come
                if found and recorded is not None:
                    if recorded.type == ERROR_REPLY:
                        raise error_from_reply(recorded)
                    return recorded
            return answer.result()
        finally:
            await _settled(answer)

    def step(
        self, name: str, fn: Callable[..., Awaitable[T] | T], /, *args: Any, **kwargs: Any
    ) -> Coroutine[Any, Any, T]:
        """Run `fn(*args, **kwargs)` (awaited if it returns an awaitable) once per message.

        Its result is recorded (it must be JSON; the value returned is the JSON form, as a
        re-run gets it), and a re-run of the handler for the same message (a retry, a
        redelivery, another node after a crash) gets the recorded result without calling
        `fn`. A step that raised is not recorded: it runs again. Steps are numbered in the
        order they are called, so which steps a handler takes must depend only on the
        message and earlier steps' results (else `WorkflowDiverged`). Outside a handler
        `fn` just runs.

        Raises:
            StepResultNotJSON: `fn` returned something JSON cannot hold.
            WorkflowDiverged: the record holds another step under this one's number.
        """
        run = self._cell.workflow_run()
        return self._step(run, run.take_seq() if run is not None else -1, name, fn, args, kwargs)

    async def _step(
        self,
        run: WorkflowRun | None,
        seq: int,
        name: str,
        fn: Callable[..., Awaitable[T] | T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        if run is not None:
            record = await run.recorded(self._cell.runtime.journal, seq, name, "step")
            if record is not None:
                return record.result  # type: ignore[no-any-return]
        result = fn(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        if run is None:
            return result
        recorded: T = self._finished(run, seq, name, "step", as_json(name, result))
        return recorded

    def sleep(self, delay: float | timedelta) -> Coroutine[Any, Any, None]:
        """Wait `delay` (seconds or a timedelta): inside a handler, a durable timer.

        When the wait ends is recorded as it begins, so a re-run of the handler (a retry,
        another node after a crash) waits only for what is left. A wait longer than
        `MAS_WORKFLOW__PARK_AFTER` parks the handler: it gives up its agent and its
        delivery, and the message is handled again when the time comes, by whichever node
        takes it, every finished step answered from its record (see `mas.actors.workflow`).
        Outside a handler it is a plain sleep on the runtime's clock.
        """
        seconds = _seconds(delay)
        run = self._cell.workflow_run()
        if run is None:
            return self._system.tasks.sleep(seconds)
        return self._sleep(run, run.take_seq(), seconds)

    async def _sleep(self, run: WorkflowRun, seq: int, seconds: float) -> None:
        until = await self._wait_began(run, seq, "sleep", "sleep", seconds)
        remaining = until - time.time()
        if remaining <= 0:
            return
        if run.parkable and remaining > self._park_after():
            raise Parked([Wait(until)])
        await self._system.tasks.sleep(remaining)

    def signal(self, name: str, timeout: float | timedelta) -> Coroutine[Any, Any, Any]:
        """Wait for signal `name` sent to the task being handled; its JSON payload.

        Signals come from outside mas's agents: `POST /tasks/{id}/signals/{name}` (a person
        approves, another system calls back), and are kept in the record, so one sent before
        the wait begins is found at once. A durable wait like `sleep`: its deadline is
        recorded as it begins, a signal sent after it does not count, and a wait longer than
        `MAS_WORKFLOW__PARK_AFTER` parks the handler until the signal comes (the gateway
        that takes the signal wakes it) or the deadline passes. Needs persistence
        (`MAS_PERSIST`) and a message that belongs to a task.

        Raises:
            SignalTimeout: no such signal within `timeout`.
            MasError: the record cannot be read now (the handler fails and is retried).
        """
        cell = self._cell
        current, journal = cell.current, cell.runtime.journal
        task_id = task_of(current) if current is not None else None
        run = cell.workflow_run()
        if run is None or task_id is None or journal is None:
            raise UsageError(
                "ctx.signal waits inside a handler of a task's message, with persistence on "
                "(MAS_PERSIST): signals are kept in the task's record"
            )
        return self._signal(run, run.take_seq(), journal, task_id, name, _seconds(timeout))

    async def _signal(
        self,
        run: WorkflowRun,
        seq: int,
        journal: Journal,
        task_id: str,
        name: str,
        timeout: float,
    ) -> Any:
        until = await self._wait_began(run, seq, name, "signal", timeout)
        park_after = self._park_after()
        attempt = 0
        while True:
            found, payload = await journal.read_signal(task_id, name, until)
            if found:
                return payload
            remaining = until - time.time()
            if remaining <= 0:
                raise SignalTimeout(task_id, name, timeout)
            if run.parkable and remaining > park_after:
                raise Parked([Wait(until, task_id, name)])
            # A short wait (or a topic subscriber's, which cannot park) polls the record,
            # backing off (a signal may come from any gateway).
            attempt += 1
            delay = backoff_delay(attempt, _SIGNAL_POLL_FIRST, _SIGNAL_POLL_MAX, 0.1)
            await self._system.tasks.sleep(min(delay, remaining))

    async def _wait_began(
        self, run: WorkflowRun, seq: int, name: str, kind: StepKind, seconds: float
    ) -> float:
        """When durable wait `seq` ends (epoch seconds): recorded as it first began."""
        record = await run.recorded(self._cell.runtime.journal, seq, name, kind)
        if record is not None:
            return float(record.result["until"])
        until = time.time() + seconds
        self._finished(run, seq, name, kind, {"until": until})
        return until

    def _park_after(self) -> float:
        return self._cell.runtime.settings.workflow.park_after

    async def gather(self, *steps: Awaitable[T]) -> list[T]:
        """Await durable steps concurrently (fan-out/fan-in); their results in order.

        The steps were numbered when they were called, so a re-run numbers them alike
        whichever finishes first. When one fails the others are cancelled and its error is
        raised: those that finished are recorded and are not redone by a re-run.
        """
        waits: list[Wait] = []
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(_awaited(step, waits)) for step in steps]
        except ExceptionGroup as failed:
            # The step's own error (an AskTimeout, a HandlerError...), as a plain await
            # raises it; the group, with any other failure, stays attached as the cause.
            raise failed.exceptions[0] from failed
        if waits:
            # Steps that would park did not stop the others: those have finished (and are
            # recorded), and the handler parks until the first of the waits ends.
            raise Parked(waits)
        return [cast(T, task.result()) for task in tasks]  # none parked: each has its result

    async def _child(
        self, run: WorkflowRun, seq: int, message: Message, *, wakes: bool = False
    ) -> Message:
        """`message` as step `seq` sends it: with the id every run gives it, and, when the
        handled message is a task's, as a child task of that task (recorded before it goes).
        `wakes`: a long ask, whose answer wakes this handler if it parked (`WAKES_KEY`).
        """
        child_id = run.child_id(seq)
        if run.sends_again:
            # Perhaps sent by the run before, and handled in part: its handler reads its own
            # steps' record before it runs them.
            message = marked_rerun(message)
            message.id = child_id
        elif message.id != child_id:
            if message.target is not None:
                message = message.copy()  # sent before: never changed
            message.id = child_id
        message = self._outgoing(message)
        if wakes:
            message.metadata = {**message.metadata, WAKES_KEY: run.message_id}
        journal, current = self._cell.runtime.journal, self._cell.current
        if journal is not None and current is not None and (parent := task_of(current)):
            inherited = {PARENT_KEY: parent}
            for key in (CREATED_BY_KEY, BUDGET_KEY):  # its caller's, its budget
                if key in current.metadata:
                    inherited[key] = current.metadata[key]
            message.metadata = {**message.metadata, **inherited}
            journal.child_task(parent, message)
            await journal.flush()  # its start (on any node) finds it recorded
        return message

    def _finished(self, run: WorkflowRun, seq: int, name: str, kind: StepKind, result: Any) -> Any:
        record = run.finished(seq, name, kind, result)
        journal = self._cell.runtime.journal
        if journal is not None:
            journal.step_finished(self._cell.id, run.message_id, run.handler, record)
        return result

    async def publish(self, topic: str, message: Message) -> None:
        """Send to every subscriber of `topic` (a concrete key such as `orders.created`)."""
        await self._system.publish(topic, self._outgoing(message))

    async def spawn(self, agent: Any, *, id: str | None = None, **options: Any) -> AgentRef:
        """Start another agent under this agent's supervisor."""
        return await self._cell.supervisor.spawn(agent, id=id, **options)

    def watch(self, ref: AgentRef) -> None:
        """Receive a `Terminated` message when `ref`'s agent stops."""
        ref.watch(self.self_ref)

    async def subscribe(self, pattern: str) -> None:
        """Receive messages published to topic keys matching `pattern` (`*`, `#` allowed)."""
        await self._system.subscribe(self._cell, pattern)

    def stop(self) -> None:
        """Stop this agent once the current message is handled (a normal exit)."""
        self._cell.stop_requested = True


async def _reply_or_park(answering: Awaitable[Message], park_after: float, wait: Wait) -> Message:
    """The reply, if it comes within `park_after` seconds; else park on `wait` (the question
    stays asked: its answer, when recorded, wakes the handler)."""
    ask = asyncio.ensure_future(answering)
    try:
        await asyncio.wait([ask], timeout=park_after)
        if not ask.done():
            raise Parked([wait])
        return ask.result()
    finally:
        await _settled(ask)


async def _settled(task: asyncio.Future[Message]) -> None:
    """`task` over with, whatever ends its waiter: cancelled (and awaited) if it still runs;
    if it ended as the wait was cut short (its handler cancelled as the answer came), its
    error is taken, so that it is not reported as an error nobody retrieved."""
    if not task.done():
        task.cancel()
        await asyncio.wait([task])
    elif not task.cancelled():
        task.exception()


async def _awaited(step: Awaitable[T], waits: list[Wait]) -> T | None:
    try:
        return await step
    except Parked as parked:
        waits.extend(parked.waits)
        return None


def _seconds(delay: float | timedelta) -> float:
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if not seconds >= 0:  # also NaN
        raise UsageError(f"a wait takes a duration of 0 seconds or more, not {delay!r}")
    return seconds


def _address_of(target: str | AgentRef) -> str:
    return target if isinstance(target, str) else target.address
