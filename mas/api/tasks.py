"""Tasks as the gateway's application code: submit, read, wait for the end, list, cancel.

The routes in `mas.api.routes.tasks` only parse, authorize, call a `TaskService` method and
serialize; what a task use case does (resolve the target, create new or keyed work, hand it
to the runtime or the broker, wait for its end, cancel it) lives here, once. Failures are
mas errors, never HTTP exceptions: `mas.api.problems` maps them to statuses in one place.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING

import structlog

from mas.errors import (
    AgentStopped,
    DuplicateAgent,
    InvalidMessage,
    MailboxFull,
    MasError,
    QueueFull,
    TransportError,
    UnknownAgent,
)
from mas.messages import Message, TaskError, TaskResult, new_id
from mas.persistence.journal import TaskEnd
from mas.persistence.store import TaskRecord

if TYPE_CHECKING:
    from mas.api.auth import Claims
    from mas.api.schemas import TaskIn
    from mas.api.state import Gateway
    from mas.api.streams import TaskStream

__all__ = [
    "ADMIN",
    "IdempotencyKeyReused",
    "TaskFinished",
    "TaskIdTaken",
    "TaskService",
    "UnknownTask",
    "owner_filter",
]

_log = structlog.get_logger("mas.api.tasks")

ADMIN = "tasks:admin"
"""The scope that sees (and may cancel) every caller's tasks; others see their own only."""


# The task errors below subclass the existing error the HTTP layer already maps to their
# status (404, 409, 422), so that it maps them without a list of its own; their place in
# the error hierarchy of `mas.errors` (and a title of their own) is still to be given.


class UnknownTask(UnknownAgent):
    """No task with this id that the caller may see: another caller's task is as unknown
    as none (404)."""

    def __init__(self, task_id: str) -> None:
        MasError.__init__(self, f"no task with id {task_id!r}")
        self.address = task_id
        self.task_id = task_id


class TaskIdTaken(DuplicateAgent):
    """Another caller's task has the id a submission names (409; nothing of it is shown)."""

    def __init__(self, task_id: str) -> None:
        MasError.__init__(
            self,
            f"another caller's task has the id {task_id!r}: choose another Idempotency-Key "
            "(or body id)",
        )
        self.agent_id = task_id
        self.task_id = task_id


class IdempotencyKeyReused(InvalidMessage):
    """A submission repeats a task's id with a different request: the client's mistake
    (422), never the old task silently."""

    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"the id {task_id!r} was used for a different request (message type, target or "
            "payload differ): a retry must repeat the request, new work needs a new key"
        )
        self.task_id = task_id


class TaskFinished(AgentStopped):
    """A task that has already ended cannot be cancelled (409)."""

    def __init__(self, task_id: str, status: str) -> None:
        MasError.__init__(self, f"task {task_id!r} already {status}")
        self.agent_id = task_id
        self.task_id = task_id
        self.status = status


def owner_filter(caller: Claims) -> str | None:
    """Whose tasks `caller` may see: its own (the subject), or everyone's (`tasks:admin`)."""
    return None if ADMIN in caller.scopes else caller.subject


def _visible(caller: Claims, task: TaskRecord) -> bool:
    return ADMIN in caller.scopes or task.created_by == caller.subject


class TaskService:
    """The task use cases of one gateway, over its runtime, journal and store.

    Waits are in seconds as given (the HTTP layer applies `MAS_API__MAX_WAIT`); 0 is none.
    """

    def __init__(self, gateway: Gateway) -> None:
        self._gw = gateway

    async def submit(
        self,
        spec: TaskIn,
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
        gw = self._gw
        key = spec.id or idempotency_key
        task_id = key or new_id()
        target = self._target(spec)
        message = Message(
            spec.message_type,
            spec.payload,
            id=task_id,
            target=target,
            metadata={"task_id": task_id},
            trace_id=trace_id,
        )
        message.to_json(max_bytes=gw.settings.message_max_bytes)  # before anything is stored
        journal = gw.journal
        # A task for a local agent ends in this node's journal; any other may end elsewhere.
        local = gw.runtime.routes_locally(target)
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
            await gw.recorded(task_id)  # an accepted task is readable (an end implies one)
        return task, created

    async def get(self, task_id: str, caller: Claims) -> TaskRecord:
        """The task, if `caller` may see it.

        Raises:
            UnknownTask: no such task, or another caller's.
        """
        task = await self._gw.store.get_task(task_id)
        if task is None or not _visible(caller, task):
            raise UnknownTask(task_id)
        return task

    async def wait_for_end(self, task_id: str, caller: Claims, wait: float) -> TaskRecord:
        """The task once it has ended, or as it is after `wait` seconds.

        Raises:
            UnknownTask: no such task, or another caller's.
        """
        journal = self._gw.journal
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
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[TaskRecord]:
        """The caller's tasks (everyone's with `tasks:admin`), newest first."""
        return await self._gw.store.list_tasks(
            status=status,
            task_type=task_type,
            created_by=owner_filter(caller),
            limit=limit,
            offset=offset,
        )

    async def cancel(self, task_id: str, caller: Claims) -> TaskRecord:
        """Cancel one of the caller's tasks that has not ended; returns it cancelled.

        Raises:
            UnknownTask: no such task, or another caller's.
            TaskFinished: the task has already ended.
        """
        gw = self._gw
        await self.get(task_id, caller)
        task = await gw.store.cancel_task(task_id)
        gw.journal.discard(task_id)  # its message, if still waiting to be sent, stays unsent
        if task is None:
            raise UnknownTask(task_id)
        if task.status != "cancelled":
            raise TaskFinished(task_id, task.status)
        gw.journal.task_cancelled(task)
        return task

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
            latest = await self._gw.store.get_task(task.id)
            if latest is None:  # pruned meanwhile
                return
            current = latest
            if current.status != last:
                last = current.status
                yield current

    def _target(self, spec: TaskIn) -> str:
        """The address the task goes to: the agent, its type, or a type offering the
        capability.

        Raises:
            UnknownAgent: no running agent offers the capability.
        """
        if spec.agent is not None:
            return f"agent:{spec.agent}"
        if spec.type is not None:
            return f"type:{spec.type}"
        assert spec.capability is not None
        types = self._gw.capability_types(spec.capability)
        if not types:
            raise UnknownAgent(f"capability:{spec.capability}")
        return f"type:{types[0]}"

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
        gw = self._gw
        gw.store.check_storable(spec.payload, "payload")
        gw.check_writable()
        assert message.target is not None
        await gw.check_new_work(message.target, local=local)
        task = TaskRecord.new(
            message.id,
            spec.message_type,
            spec.payload,
            target=message.target,
            created_by=subject,
            trace_id=message.trace_id,
        )
        journal = gw.journal
        journal.task_created(task)
        if not local:
            handed = journal.send_after_commit(message)
            await gw.recorded(task.id)
            await self._handed_over(task, handed)
            return task
        journal.send_after_commit(message, delivered=True)
        try:
            await gw.runtime.tell(message.target, message)
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
        gw = self._gw
        assert message.target is not None
        try:
            await gw.check_new_work(message.target, local=local)
        except (TransportError, AgentStopped, UnknownAgent, QueueFull):
            # Refused for new work; a repeat of work accepted before gets what it was.
            existing = await gw.store.get_task(message.id)
            if existing is None:
                raise
            return _repeated(existing, spec, message, subject), False
        journal = gw.journal
        task, created = await gw.write_now(
            gw.store.create_task(
                message.id,
                spec.message_type,
                spec.payload,
                target=message.target,
                created_by=subject,
                trace_id=message.trace_id,
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
        gw = self._gw
        try:
            await asyncio.wait_for(asyncio.shield(handed), gw.settings.api.write_timeout)
        except UnknownAgent:
            await gw.recorded(task.id)
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
        self._gw.journal.task_finished(
            TaskResult.failed(task.id, TaskError(error_type, detail)),
            Message(task.type, metadata={"task_id": task.id}),
            0,
        )
        await self._gw.recorded(task.id)

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
                return ended.result().applied_to(task)
            poll = min(poll * 2, 0.5)
            latest = await self._gw.store.get_task(task.id)
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
    return task
