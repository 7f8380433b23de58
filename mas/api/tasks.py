"""Tasks as the gateway's application code: submit, read, wait for the end, list, cancel.

The routes in `mas.api.routes.tasks` only parse, authorize, call a `TaskService` method and
serialize; what a task use case does (resolve the target, create new or keyed work, hand it
to the runtime or the broker, wait for its end, cancel it) lives here, once. Failures are
mas errors, never HTTP exceptions: `mas.api.problems` maps them to statuses in one place.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

import structlog

from mas.actors.budgets import BUDGET_KEY, Budget, budget_of
from mas.actors.workflow import CREATED_BY_KEY, DEADLINE_KEY
from mas.api.schemas import MessageTaskIn
from mas.errors import (
    AgentStopped,
    IdempotencyKeyReused,
    MailboxFull,
    MasError,
    QueueFull,
    StoreUnavailable,
    TaskFinished,
    TaskIdTaken,
    TransportError,
    UnknownAgent,
    UnknownCapability,
    UnknownTask,
)
from mas.messages import Message, TaskError, TaskResult, new_id
from mas.persistence.store import TRACE_LIMIT, AuditedMessage, TaskRecord

if TYPE_CHECKING:
    from mas.api.auth import Claims
    from mas.api.backlogs import Backlogs
    from mas.api.schemas import TaskIn
    from mas.api.streams import TaskStream
    from mas.config import Settings
    from mas.persistence.journal import Audit, StoreJournal, TaskEnd
    from mas.runtime import Runtime

__all__ = [
    "ADMIN",
    "TaskService",
    "TraceMessages",
    "owner_filter",
]

_log = structlog.get_logger("mas.api.tasks")

T = TypeVar("T")

ADMIN = "tasks:admin"
"""The scope that sees (and may cancel) every caller's tasks; others see their own only."""

_TREE_CHILDREN = 500
"""Child tasks `GET /tasks/{id}/tree` shows (the newest, listed oldest first); the rest are
paged through `GET /tasks/?parent=`."""


def owner_filter(caller: Claims) -> str | None:
    """Whose tasks `caller` may see: its own (the subject), or everyone's (`tasks:admin`)."""
    return None if ADMIN in caller.scopes else caller.subject


def _visible(caller: Claims, task: TaskRecord) -> bool:
    return ADMIN in caller.scopes or task.created_by == caller.subject


@dataclass(frozen=True, slots=True)
class TraceMessages:
    """What `TaskService.messages` found: the audited messages of a task's trace."""

    task: TaskRecord
    audit: Audit
    """`MAS_AUDIT` of this gateway: `off` records no message, so `messages` is empty."""
    messages: list[AuditedMessage]
    """Oldest first, the caller's only (see `TaskService.messages`)."""
    cut: bool
    """The trace has more than `TRACE_LIMIT` messages: only the oldest were read."""
    hidden: int
    """Messages read but not shown: they belong to no task, or to another caller's."""


class TaskService:
    """The task use cases of one gateway, over its runtime, journal (and its store) and the
    broker's backlogs.

    Waits are in seconds as given (the HTTP layer applies `MAS_API__MAX_WAIT`); 0 is none.
    Writes a caller waits for are bounded by `MAS_API__WRITE_TIMEOUT`.
    """

    def __init__(
        self,
        settings: Settings,
        runtime: Runtime,
        journal: StoreJournal,
        backlogs: Backlogs,
    ) -> None:
        self._settings = settings
        self._runtime = runtime
        self._journal = journal
        self._store = journal.store
        self._backlogs = backlogs

    async def submit(
        self,
        spec: TaskIn | MessageTaskIn,
        caller: Claims,
        *,
        idempotency_key: str | None = None,
        trace_id: str | None = None,
        wait: float = 0.0,
    ) -> tuple[TaskRecord, bool]:
        """Create a task and hand it to an agent; returns the task and whether it is new.

        The same id (body `id`, else `idempotency_key`) returns the caller's task instead
        of creating another. With `wait`, returns the task once it ended (or as it is
        after `wait` seconds).

        Raises:
            MessageTooLarge: the task's message is over `MAS_MESSAGE_MAX_BYTES`.
            UnknownAgent: no agent serves the target (or offers the capability).
            MailboxFull, QueueFull: no room for new work now.
            AgentStopped: the agent runs nowhere.
            TransportError, StoreUnavailable: the broker or the database does not answer.
            TaskIdTaken: another caller's task has the id.
            IdempotencyKeyReused: the id names a different request.
        """
        correlation_id: str | None = None
        metadata: dict[str, Any] = {}
        if isinstance(spec, MessageTaskIn):
            # The Message shape: its trace id continues the caller's trace, its metadata
            # travels with it; the sender it claims is kept there, unchecked, not trusted.
            trace_id = spec.trace_id or trace_id
            correlation_id, metadata = spec.correlation_id, spec.metadata
            if spec.sender is not None:
                metadata = {**metadata, "sender": spec.sender}
            spec = spec.as_task()
        key = spec.id or idempotency_key
        task_id = key or new_id()
        target = await self._target(spec, key)
        metadata = {**metadata, "task_id": task_id, CREATED_BY_KEY: caller.subject}
        if spec.deadline is not None:
            metadata[DEADLINE_KEY] = time.time() + spec.deadline
        # Every task counts what its model calls spend (`spent`); a budget also limits it.
        limits = Budget() if spec.budget is None else Budget(spec.budget.tokens, spec.budget.cost)
        metadata[BUDGET_KEY] = limits.metadata(task_id)
        message = Message(
            spec.message_type,
            spec.payload,
            id=task_id,
            target=target,
            correlation_id=correlation_id,
            metadata=metadata,
            trace_id=trace_id,
        )
        if self._runtime.tracing is not None:
            message = self._runtime.tracing.stamp(message)  # the request's span: its parent
        message.to_json(max_bytes=self._settings.message_max_bytes)  # before anything is stored
        journal = self._journal
        # A task for a local agent ends in this node's journal; any other may end elsewhere.
        local = self._runtime.routes_locally(target)
        ended = journal.watch_task(task_id) if wait > 0 else None
        try:
            if key is None:
                task = await self._create_new(spec, message, caller.subject, local=local)
                created = True
            else:
                task, created = await self._create_keyed(spec, message, caller.subject, local=local)
            _log.info(
                "task_submitted",
                task_id=task_id,
                target=target,
                trace_id=trace_id,
                created=created,
                created_by=caller.subject,
            )
            if ended is not None and not task.done:
                task = await self._until_end(task, ended, wait, local=local)
        finally:
            if ended is not None:
                journal.unwatch_task(task_id, ended)
        if key is None and not task.done:
            await self._recorded(task_id)  # an accepted task is readable (an end implies one)
        return task, created

    async def get(self, task_id: str, caller: Claims) -> TaskRecord:
        """The task, if `caller` may see it.

        Raises:
            UnknownTask: no such task, or another caller's.
        """
        task = await self._store.get_task(task_id)
        if task is None or not _visible(caller, task):
            raise UnknownTask(task_id)
        return task

    async def wait_for_end(self, task_id: str, caller: Claims, wait: float) -> TaskRecord:
        """The task once it has ended, or as it is after `wait` seconds.

        Raises:
            UnknownTask: no such task, or another caller's.
        """
        journal = self._journal
        ended = journal.watch_task(task_id)  # before the read: no end falls in between
        try:
            task = await self.get(task_id, caller)
            if not task.done:
                task = await self._until_end(task, ended, wait)
        finally:
            journal.unwatch_task(task_id, ended)
        return task

    async def list(
        self,
        caller: Claims,
        *,
        status: str | None = None,
        task_type: str | None = None,
        parent_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[TaskRecord]:
        """The caller's tasks (everyone's with `tasks:admin`), newest first; with
        `parent_id`, the tasks that task's workflow started.

        Raises:
            UnknownTask: `parent_id` names no task of the caller's.
        """
        if parent_id is not None:
            await self.get(parent_id, caller)
        return await self._store.list_tasks(
            status=status,
            task_type=task_type,
            created_by=owner_filter(caller),
            parent_id=parent_id,
            limit=limit,
            offset=offset,
        )

    async def tree(
        self, task_id: str, caller: Claims
    ) -> tuple[TaskRecord, Sequence[dict[str, Any]], Sequence[TaskRecord]]:
        """One of the caller's tasks, the durable steps its handler finished, and the
        tasks its workflow started (oldest first).

        Raises:
            UnknownTask: no such task, or another caller's.
        """
        task = await self.get(task_id, caller)
        steps = [_shown_step(step) for step in await self._store.task_steps(task_id)]
        children = await self._store.list_tasks(parent_id=task_id, limit=_TREE_CHILDREN)
        return task, steps, list(reversed(children))

    async def messages(self, task_id: str, caller: Claims) -> TraceMessages:
        """One of the caller's tasks and the audited messages of its trace (the oldest
        `TRACE_LIMIT`, oldest first).

        A trace is not a task: its id comes from the client (`traceparent`, a Message's
        `trace_id`), so one caller's tasks can share a trace with another's. A caller
        without `tasks:admin` sees only the messages of its own tasks: a message's task (or,
        for a reply, the task whose message it answers) is looked up in the tasks' records,
        whose creator the messages cannot claim; the others are counted, not shown.

        Raises:
            UnknownTask: no such task, or another caller's.
        """
        task = await self.get(task_id, caller)
        audit = self._journal.audit
        if audit == "off" or task.trace_id is None:
            return TraceMessages(task, audit, [], cut=False, hidden=0)
        log, cut = await self._store.trace_log(task.trace_id, limit=TRACE_LIMIT)
        if ADMIN in caller.scopes:
            return TraceMessages(task, audit, log, cut=cut, hidden=0)
        # A message is a task's work (`task_id`), or answers a task's ask (`correlation_id`:
        # a reply to a child task's message names no task itself).
        owners = await self._store.task_owners(
            {key for m in log for key in (m.task_id, m.correlation_id) if key}
        )

        def mine(message: AuditedMessage) -> bool:
            of = message.task_id or message.correlation_id
            return of is not None and owners.get(of, "") == caller.subject

        shown = [message for message in log if mine(message)]
        return TraceMessages(task, audit, shown, cut=cut, hidden=len(log) - len(shown))

    async def cancel(self, task_id: str, caller: Claims) -> TaskRecord:
        """Cancel one of the caller's tasks that has not ended; returns it cancelled.

        Raises:
            UnknownTask: no such task, or another caller's.
            TaskFinished: the task has already ended.
        """
        await self.get(task_id, caller)
        task = await self._store.cancel_task(task_id)
        self._journal.discard(task_id)  # its message, if still waiting to be sent, stays unsent
        if task is None:
            raise UnknownTask(task_id)
        if task.status != "cancelled":
            raise TaskFinished(task_id, task.status)
        self._journal.task_cancelled(task)
        # Its handler, if it runs here; other nodes cancel theirs within a heartbeat.
        self._runtime.cancel_task_handlers(task_id)
        return task

    async def signal(
        self, task_id: str, name: str, payload: Any, caller: Claims
    ) -> tuple[TaskRecord, bool]:
        """Keep signal `name` for one of the caller's tasks that has not ended; returns the
        task and whether this signal was stored (False: the name was signalled before).

        Raises:
            UnknownTask: no such task, or another caller's.
            TaskFinished: the task has already ended.
        """
        await self.get(task_id, caller)
        journal = self._journal
        task, stored, woken = await self._store.send_signal(
            task_id,
            name,
            payload,
            caller.subject,
            owner=journal.node_id,
            lease_until=datetime.now(UTC) + timedelta(seconds=journal.relay.lease),
        )
        if woken:
            journal.wake(woken)  # the handlers parked waiting for it: pushed, not polled
        if task is None:
            raise UnknownTask(task_id)
        if task.done:
            raise TaskFinished(task_id, task.status)
        return task, stored

    async def changes(
        self, task: TaskRecord, stream: TaskStream, timeout: float
    ) -> AsyncGenerator[TaskRecord, None]:
        """`task`, then the task again after each change of its status, until it ends.

        `stream` (opened before `task` was read, so that no change falls in between) wakes
        the iteration; it ends after `timeout` seconds, or if the task is pruned meanwhile.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        current = task
        yield current
        last = current.status
        while not current.done:
            remaining = deadline - loop.time()
            if remaining <= 0 or not await stream.changed(remaining):
                return
            latest = await self._store.get_task(task.id)
            if latest is None:  # pruned meanwhile
                return
            current = latest
            if current.status != last:
                last = current.status
                yield current

    def _check_writable(self) -> None:
        """Refuse new work at once while the database refuses writes, rather than queue it.

        Raises:
            StoreUnavailable: the journal's last write failed (503).
        """
        if self._journal.writer.failing:
            raise StoreUnavailable(
                f"the database at {self._store.url} is not accepting writes: try again shortly"
            )

    def _check_sending(self) -> None:
        """Refuse new work for other nodes at once while the broker does not take messages.

        What was accepted before stays in the outbox and goes once the broker is back.

        Raises:
            TransportError: the transport is disconnected, or the outbox's last send failed
                (503).
        """
        if self._journal.relay.failing or not self._runtime.transport.ready:
            raise TransportError(
                "the message broker is not taking messages: try again shortly (tasks already "
                "accepted are kept and sent once it is back)"
            )

    async def _check_agent(self, target: str) -> None:
        """Refuse work for an agent the registry shows stopped: nobody would ever take it.

        An agent whose node merely stopped heartbeating may come back; its work is accepted,
        and if it does not come back, its queue is retired and the work dead-lettered (see
        `StoreJournal.retire_gone`): it fails visibly, never stays pending.

        Raises:
            AgentStopped: the agent stopped (or was retired) and runs nowhere (409).
        """
        if not target.startswith("agent:"):
            return
        record = await self._store.get_agent(target.removeprefix("agent:"))
        if record is not None and record.status in ("stopped", "retired"):
            raise AgentStopped(record.id)

    async def _check_new_work(self, target: str, *, local: bool) -> None:
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
            self._runtime.check_room(target)
            return
        self._check_sending()
        if target.startswith("capability:"):
            return  # nobody offers it yet: no queue to look at (see `_target`)
        await self._check_agent(target)
        await self._backlogs.check(target)

    async def _recorded(self, task_id: str) -> None:
        """Wait until everything this node has recorded so far is committed.

        Raises:
            StoreUnavailable: not committed within `MAS_API__WRITE_TIMEOUT` (503); what was
                recorded stays queued and is written once the database answers.
        """
        timeout = self._settings.api.write_timeout
        try:
            await asyncio.wait_for(self._journal.writer.flush(), timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"the database at {self._store.url} did not record task {task_id!r} within "
                f"{timeout:g}s: it stays queued and is written once the database answers "
                f"(then GET /tasks/{task_id} shows it)"
            ) from None

    async def _write_now(self, write: Coroutine[Any, Any, T], task_id: str) -> T:
        """A write the request makes itself (not through the journal), waited for at most
        `MAS_API__WRITE_TIMEOUT`, like every other write a client waits for.

        The write runs as a task the runtime owns: a driver blocked in a thread (SQLite's
        lock wait) cannot be cancelled, so the request stops waiting instead, and the write
        ends on its own (committed, or rolled back on the database's failure).

        Raises:
            StoreUnavailable: no answer within the timeout (503); the write may still land,
                so a retry under the same id is the way to find out.
        """
        timeout = self._settings.api.write_timeout
        running = self._runtime.start_task(_outcome(write))
        try:
            result, error = await asyncio.wait_for(asyncio.shield(running), timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"the database at {self._store.url} did not record task {task_id!r} within "
                f"{timeout:g}s: retry with the same id"
            ) from None
        if error is not None:
            raise error
        return cast(T, result)

    async def _target(self, spec: TaskIn, key: str | None) -> str:
        """The address the task goes to: the agent, its type, or a type offering the
        capability (else the type given with it, when one is).

        A capability is resolved once: a repeat under the client's id (`key`) goes where
        the first submission went, whatever the capability resolves to now, or whether
        anyone offers it now (the repeat gets the task it was, as for any other target).

        Raises:
            UnknownCapability: no live agent offers the capability, here or elsewhere, and
                no type to fall back on was given.
        """
        if spec.agent is not None:
            return f"agent:{spec.agent}"
        if spec.capability is None:
            assert spec.type is not None
            return f"type:{spec.type}"
        if key is not None:
            existing = await self._store.get_task(key)
            if existing is not None and existing.target is not None:
                return existing.target
        # Those this node runs first (no broker trip), else those live anywhere in the
        # cluster, from the agents' records (each node keeps its agents' heartbeats fresh).
        types = await self._runtime.capability_types(spec.capability)
        if types:
            return f"type:{types[0]}"
        if spec.type is not None:
            # The design's routing policy: capability first, then the task's type, ...
            return f"type:{spec.type}"
        if spec.deadline is not None:
            # ... then waiting, backing off, until the deadline (`OutboxRelay`: its message
            # is sent again later while nobody offers the capability).
            return f"capability:{spec.capability}"
        raise UnknownCapability(spec.capability)

    async def _create_new(
        self, spec: TaskIn, message: Message, subject: str, *, local: bool
    ) -> TaskRecord:
        """Create a task under a fresh id and hand it over, committing only when it must.

        The message goes into the outbox with the task's creation: nothing between the
        commit and the wire can lose it. A fresh id cannot exist yet, so nothing is read.
        When a local agent will handle the message (`local`), it goes at once: this node's
        journal records its creation before its start and end (creations come first in a
        batch), one commit can hold the lot, and the outbox row goes in the commit that
        records the handling (or is never written at all). Otherwise another node may act
        on the message, so the creation commits before the relay sends it.
        """
        self._store.check_storable(spec.payload, "payload")
        self._check_writable()
        assert message.target is not None
        await self._check_new_work(message.target, local=local)
        task = TaskRecord.new(
            message.id,
            spec.message_type,
            spec.payload,
            target=message.target,
            created_by=subject,
            trace_id=message.trace_id,
            deadline=_deadline(message),
            budget=_budget(message),
        )
        journal = self._journal
        journal.task_created(task)
        if not local:
            handed = journal.send_after_commit(message)
            await self._recorded(task.id)
            await self._handed_over(task, handed)
            return task
        journal.send_after_commit(message, delivered=True)
        try:
            await self._runtime.tell(message.target, message)
        except (MailboxFull, AgentStopped, UnknownAgent) as exc:
            # Nobody will resend a task whose id the client never saw: record the refusal.
            journal.discard(message.id)
            await self._fail(task, type(exc).__name__, str(exc))
            raise
        return task

    async def _create_keyed(
        self, spec: TaskIn, message: Message, subject: str, *, local: bool
    ) -> tuple[TaskRecord, bool]:
        """Create a task under the client's id (or find it), in a transaction of its own.

        The transaction also writes the message's outbox row, so a repeated submission
        never needs to hand the message over again: the relay does, until it is on its way.
        """
        assert message.target is not None
        try:
            await self._check_new_work(message.target, local=local)
        except (TransportError, AgentStopped, UnknownAgent, QueueFull):
            # Refused for new work; a repeat of work accepted before gets what it was.
            existing = await self._store.get_task(message.id)
            if existing is None:
                raise
            return _repeated(existing, spec, message, subject), False
        journal = self._journal
        task, created = await self._write_now(
            self._store.create_task(
                message.id,
                spec.message_type,
                spec.payload,
                target=message.target,
                created_by=subject,
                trace_id=message.trace_id,
                deadline=_deadline(message),
                budget=_budget(message),
                send=journal.outbox_row(message),
            ),
            message.id,
        )
        if created:
            await self._handed_over(task, journal.send_committed(message))
            return task, True
        return _repeated(task, spec, message, subject), False

    async def _handed_over(self, task: TaskRecord, handed: asyncio.Future[None] | None) -> None:
        """Wait (bounded) for the relay's first attempt to send a committed task's message.

        The task is accepted either way: a message the broker did not take now stays in
        the outbox and goes when it can. Only a target nobody serves ends it (recorded
        failed).

        Raises:
            UnknownAgent: no agent answers to the task's target.
        """
        if handed is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(handed), self._settings.api.write_timeout)
        except UnknownAgent:
            await self._recorded(task.id)
            raise
        except (MasError, TimeoutError) as exc:
            _log.warning(
                "task_send_deferred",
                task_id=task.id,
                error_type=type(exc).__name__,
                error=str(exc),
            )

    async def _fail(self, task: TaskRecord, error_type: str, detail: str) -> None:
        """Record `task` failed with this error, and wait until that is committed."""
        self._journal.task_finished(
            TaskResult.failed(task.id, TaskError(error_type, detail)),
            Message(task.type, metadata={"task_id": task.id}),
            0,
        )
        await self._recorded(task.id)

    async def _until_end(
        self,
        task: TaskRecord,
        ended: asyncio.Future[TaskEnd],
        wait: float,
        *,
        local: bool = False,
    ) -> TaskRecord:
        """`task` once it has ended (or as it is after `wait` seconds).

        This node's journal resolves `ended` when it commits the end; a task that ends on
        another node (a worker) is found by re-reading the store, soon at first (most tasks
        are quick), then backing off to twice a second. A task this request just handed to
        a local agent is re-read only as a safety net (its agent may stop and hand it over).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        poll = 0.5 if local else 0.01
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return task
            # asyncio.wait leaves `ended` alone when the poll interval ends (wait_for cancels).
            await asyncio.wait((ended,), timeout=min(remaining, poll))
            if ended.done():
                if task.budget is not None:
                    # What it spent is counted outside the journal's commits: read it.
                    latest = await self._store.get_task(task.id)
                    if latest is not None and latest.done:
                        return latest
                return ended.result().applied_to(task)
            poll = min(poll * 2, 0.5)
            latest = await self._store.get_task(task.id)
            if latest is not None:
                task = latest
                if task.done:
                    return task


def _repeated(task: TaskRecord, spec: TaskIn, message: Message, subject: str) -> TaskRecord:
    """The task a repeated submission under the same id gets: the caller's own, for the
    same request.

    Raises:
        TaskIdTaken: another caller's task has the id.
        IdempotencyKeyReused: the same id was used for a different request.
    """
    if task.created_by != subject:
        raise TaskIdTaken(task.id)
    if (task.type, task.target, task.payload) != (spec.message_type, message.target, spec.payload):
        raise IdempotencyKeyReused(task.id)
    asked = _budget(message) or Budget()
    if (task.budget_tokens, task.budget_cost) != (asked.tokens, asked.cost):
        raise IdempotencyKeyReused(task.id)  # the same work under another budget
    return task


async def _outcome(write: Coroutine[Any, Any, T]) -> tuple[T | None, Exception | None]:
    """The write's result or error as a value: an abandoned write's failure must not crash
    the runtime that owns it (the store has logged the database's outage)."""
    try:
        return await write, None
    except Exception as exc:
        return None, exc


STEP_RESULT_LIMIT = 16_384
"""Characters of JSON a step's result may have in a task's tree (more is left out)."""


def _shown_step(step: dict[str, Any]) -> dict[str, Any]:
    """A recorded step as the tree shows it: an ask's answer (its reply's payload) or a
    step's result, left out past `STEP_RESULT_LIMIT` (a send has none)."""
    result = step.get("result")
    if step["kind"] == "ask" and isinstance(result, dict):
        result = result.get("payload")
    elif step["kind"] == "send":
        result = None
    omitted = result is not None and len(json.dumps(result, default=str)) > STEP_RESULT_LIMIT
    return {**step, "result": None if omitted else result, "result_omitted": omitted}


def _budget(message: Message) -> Budget | None:
    """The budget of the task of `message` (`BUDGET_KEY`), if it has one."""
    found = budget_of(message)
    return None if found is None else found[1]


def _deadline(message: Message) -> datetime | None:
    """When the task of `message` times out (`DEADLINE_KEY`), if it has a deadline."""
    deadline = message.metadata.get(DEADLINE_KEY)
    return None if deadline is None else datetime.fromtimestamp(deadline, UTC)
