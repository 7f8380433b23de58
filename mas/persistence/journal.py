"""StoreJournal: the runtime's record in the database, written in batches behind the hot path.

Handlers never wait for the database: each record is appended to an in-memory batch, and one
writer task commits whatever has accumulated while the previous commit ran (group commit).
Deliveries from a transport are acknowledged only after the commit that records them. When
the database is down, the writer keeps the batch and retries with backoff; past
`high_water` pending rows, handlers wait (back-pressure) instead of memory growing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog

from mas.actors.budgets import Budget, Spent
from mas.actors.deadletters import DeadLetter
from mas.actors.journal import JournalNode, StartedAgent
from mas.actors.replies import error_notice
from mas.actors.transport import Delivery
from mas.actors.workflow import (
    CREATED_BY_KEY,
    PARENT_KEY,
    WAKES_KEY,
    StepRecord,
    Wait,
    marked_woken,
    task_of,
)
from mas.errors import MasError, StoreUnavailable, TransportError
from mas.messages import Message, TaskError, TaskResult
from mas.observability import tracing
from mas.persistence.engine import refused_data
from mas.persistence.outbox import OutboxRelay
from mas.persistence.store import Batch, Store, TaskRecord, message_row

__all__ = ["BatchWriter", "StoreJournal", "TaskEnd"]

_log = structlog.get_logger("mas.persistence")

Audit = Literal["all", "tasks", "off"]


class BatchWriter:
    """Collects rows and commits them in batches; acks deliveries after their commit."""

    def __init__(
        self,
        store: Store,
        *,
        high_water: int = 20_000,
        retry_max: float = 1.0,
        close_timeout: float = 10.0,
    ) -> None:
        self.store = store
        self.high_water = high_water
        self.retry_max = retry_max
        self.close_timeout = close_timeout
        self.pending = Batch()
        self.settle: list[Delivery] = []
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.failing = False
        """The last write failed (the database is away): nothing commits until one succeeds."""
        self.on_commit: Callable[[Batch], None] | None = None
        """Called with each batch once it is committed (before the next one is taken)."""
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()
        self._room.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Batches are numbered as they are taken from `pending`; `flush` waits for the
        # number that will hold what is pending now, not for the writer to fall idle
        # (under steady load it never does).
        self._taken = 0
        self._committed = 0
        self._progress = asyncio.Event()
        self._crashed: BaseException | None = None

    def start(self, on_crash: Callable[[BaseException], None] | None = None) -> None:
        """Start the writer task; a crash of it (a bug, not an outage) goes to `on_crash`."""
        task = asyncio.get_running_loop().create_task(self._run(), name="mas-batch-writer")
        self._task = task
        if on_crash is not None:
            _report_crash(task, on_crash)

    @property
    def crashed(self) -> bool:
        """The writer task died on an error: nothing it was given will commit."""
        return self._crashed is not None

    def _check(self) -> None:
        """Raise if the writer died: what waits for a commit would otherwise wait for ever."""
        if self._crashed is not None:
            raise StoreUnavailable(
                f"the journal's writer stopped: {type(self._crashed).__name__}: {self._crashed}"
            ) from self._crashed

    def wake(self) -> None:
        """New rows were appended to `pending`."""
        self._idle.clear()
        self._wake.set()
        if len(self.pending) >= self.high_water:
            self._room.clear()

    @property
    def full(self) -> bool:
        return not self._room.is_set()

    async def wait_for_room(self) -> None:
        """Wait until the backlog is under `high_water` again.

        Raises:
            StoreUnavailable: the writer stopped on an error, so the backlog never shrinks.
        """
        await self._room.wait()
        self._check()

    async def flush(self) -> None:
        """Wait until every row appended so far is committed (not what comes after).

        Raises:
            StoreUnavailable: the writer stopped on an error, so those rows never commit.
        """
        self._check()
        if self._idle.is_set():
            return
        target = self._taken + (1 if len(self.pending) or self.settle else 0)
        while self._committed < target:
            progress = self._progress
            await progress.wait()
            self._check()

    async def _run(self) -> None:
        try:
            await self._write_batches()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # A bug (the store raised something other than an outage): wake every waiter
            # so that it fails now instead of at its timeout, then let the owner see it.
            self._crashed = exc
            self._progress.set()
            self._room.set()
            raise

    async def _write_batches(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            # One more turn of the loop before taking the batch: a local handler that is about
            # to record its end then shares the commit with its task's creation, and the
            # outbox row written with the creation is dropped unwritten (measured: 1,050 of
            # 1,050 rows written and deleted at 8 concurrent one-trip tasks without it, 50 with).
            await asyncio.sleep(0)
            while len(self.pending) or self.settle:
                batch, settle = self.pending, self.settle
                self.pending, self.settle = Batch(), []
                self._taken += 1
                number = self._taken
                try:
                    await self._write(batch)
                except StoreUnavailable as exc:
                    # The store logs the outage once; each retry is a debug line.
                    self.failures += 1
                    self.failing = True
                    _log.debug(
                        "store_write_failed", rows=len(batch), retry_in=delay, error=str(exc)
                    )
                    batch.extend(self.pending)
                    self.pending, self.settle = batch, settle + self.settle
                    if self._closing and self._task is not None and self._give_up():
                        return
                    await asyncio.sleep(delay)  # backoff while the database is away
                    delay = min(delay * 2, self.retry_max)
                    continue
                delay = 0.05
                self.failing = False
                self.written += len(batch)
                self.batches += 1
                for delivery in settle:
                    await delivery.ack()
                if self.on_commit is not None:
                    self.on_commit(batch)
                # Not kept until the next batch comes: after a burst, it may be the size
                # of the backlog (parked handlers' wake-ups and steps, say).
                del batch, settle
                self._committed = number
                self._progress.set()
                self._progress = asyncio.Event()
                # Let whoever waits for the connection (SQLite has one) take it before the
                # next batch does: under steady writes, reads would otherwise starve.
                await asyncio.sleep(0)
                if len(self.pending) < self.high_water:
                    self._room.set()
            self._idle.set()
            if self._closing:
                return

    def _give_up(self) -> bool:
        return asyncio.get_running_loop().time() >= self._deadline

    async def _write(self, batch: Batch) -> None:
        spans = tracing.active()
        if spans is None:
            await self._apply(batch)
            return
        with spans.committing(len(batch)):
            await self._apply(batch)

    async def _apply(self, batch: Batch) -> None:
        try:
            await self.store.apply(batch)
        except StoreUnavailable as exc:
            if not refused_data(exc.__cause__):
                raise
            # One row the database refuses (NUL characters on PostgreSQL) must not hold the
            # rest back: store it with the characters replaced, and say so.
            _log.error("store_rows_sanitized", rows=len(batch), error=str(exc.__cause__))
            await self.store.apply(_sanitized(batch))

    async def close(self) -> None:
        """Commit what is pending (bounded by `close_timeout`), then stop."""
        if self._task is None:
            return
        self._closing = True
        self._deadline = asyncio.get_running_loop().time() + self.close_timeout
        self._wake.set()
        # Not `wait_for(shield(task))`: a writer that crashed would raise its error here
        # again, and its owner (`on_crash`) has it already.
        done, _ = await asyncio.wait([self._task], timeout=self.close_timeout + 1)
        if not done:
            self._task.cancel()
        if len(self.pending):
            _log.error(
                "store_rows_not_written",
                rows=len(self.pending),
                unacknowledged=len(self.settle),
                hint="the database was unreachable at shutdown; unacknowledged messages "
                "return to their queues",
            )
        self._task = None


def _owned(coro: Coroutine[Any, Any, None], node: JournalNode, name: str) -> asyncio.Task[None]:
    """A task of the journal: cancelled by `close`, and its crash fails the runtime."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _report_crash(task, node.fail)
    return task


def _report_crash(task: asyncio.Task[None], on_crash: Callable[[BaseException], None]) -> None:
    """Hand `task`'s error (not its cancellation) to `on_crash` when it ends."""

    def crashed(done: asyncio.Task[None]) -> None:
        if not done.cancelled() and (error := done.exception()) is not None:
            on_crash(error)

    task.add_done_callback(crashed)


def _sanitized(batch: Batch) -> Batch:
    def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            json.loads(json.dumps(row, default=str).replace("\\u0000", "\\ufffd")) for row in rows
        ]

    result = Batch(
        created=clean(batch.created),
        outbox={key: clean([row])[0] for key, row in batch.outbox.items()},
        agents=clean(batch.agents),
        messages=clean(batch.messages),
        steps=clean(batch.steps),
        processed=clean(batch.processed),
        dead_letters=clean(batch.dead_letters),
        running=clean(batch.running),
        finished=clean(batch.finished),
        completed=clean(batch.completed),
        sent=batch.sent,
        wakes={key: clean([row])[0] for key, row in batch.wakes.items()},
    )
    for rows in (
        result.created,
        list(result.outbox.values()),
        list(result.wakes.values()),
        result.agents,
        result.messages,
        result.steps,
        result.processed,
        result.dead_letters,
        result.running,
    ):
        for row in rows:
            for key, value in row.items():
                if key.endswith("_at") or key == "last_heartbeat":
                    row[key] = datetime.fromisoformat(value) if value else None
    for row in (*result.finished, *result.completed):
        row["finished_at"] = datetime.fromisoformat(row["finished_at"])
    return result


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """How a task ended, as a commit of this journal recorded it."""

    status: str
    result: Any
    error: dict[str, Any] | None
    attempts: int
    finished_at: datetime | None
    started: dict[str, Any] | None = None
    """The first `running` row this journal wrote for the task, if it wrote one."""
    spent: tuple[int, float] | None = None
    """What its model calls spent (tokens, cost), when that is how it ended."""

    @classmethod
    def of(cls, task: TaskRecord) -> TaskEnd:
        """The end of `task` as the store has it (ended outside this journal's commits)."""
        started = {
            "started_at": task.started_at,
            "target": task.target,
            "trace_id": task.trace_id,
        }
        spent = (task.spent_tokens, task.spent_cost)
        return cls(
            task.status, task.result, task.error, task.attempts, task.finished_at, started, spent
        )

    def applied_to(self, task: TaskRecord) -> TaskRecord:
        """`task` (as read or created earlier) updated as the store updated it.

        The same rules as `Store.apply`: the first start counts, and a start fills in the
        target and trace id only where the task had none.
        """
        started = self.started or {}
        spent = (task.spent_tokens, task.spent_cost) if self.spent is None else self.spent
        return dataclasses.replace(
            task,
            spent_tokens=spent[0],
            spent_cost=spent[1],
            status=self.status,
            result=self.result,
            error=self.error,
            attempts=self.attempts,
            started_at=task.started_at or started.get("started_at"),
            target=task.target or started.get("target"),
            trace_id=task.trace_id or started.get("trace_id"),
            finished_at=self.finished_at,
        )


class _TaskWatch:
    """Requests waiting for one task to end, and its start if this journal recorded it."""

    __slots__ = ("futures", "spent", "started")

    def __init__(self) -> None:
        self.futures: list[asyncio.Future[TaskEnd]] = []
        self.started: dict[str, Any] | None = None
        self.spent: tuple[int, float] | None = None
        """What its model calls had spent at this node's last charge of it."""

    def resolve(self, end: TaskEnd) -> None:
        for future in self.futures:
            if not future.done():
                future.set_result(end)


class StoreJournal:
    """The runtime's Journal backed by a Store (`MAS_AUDIT=all|tasks|off`)."""

    def __init__(
        self,
        store: Store,
        *,
        audit: Audit = "all",
        high_water: int = 20_000,
        owns_store: bool = False,
        heartbeat_interval: float = 5.0,
        outbox_lease: float = 10.0,
        outbox_sweep_interval: float = 1.0,
        retire_after: float | None = None,
        agents_stale_after: float | None = None,
    ) -> None:
        self.store = store
        self.owns_store = owns_store
        self.audit = audit
        self.writer = BatchWriter(store, high_water=high_water)
        self.relay = OutboxRelay(
            store,
            on_sent=self._sent,
            on_undeliverable=self._undeliverable,
            lease=outbox_lease,
            sweep_interval=outbox_sweep_interval,
        )
        self.node_id: str | None = None
        self.heartbeat_interval = heartbeat_interval
        self.retire_after = retire_after
        """Seconds after which an agent gone for good gives up its queue (None: never)."""
        self.agents_stale_after = (
            agents_stale_after if agents_stale_after is not None else 3 * heartbeat_interval
        )
        """Seconds after its last heartbeat that an agent no longer counts as live."""
        self._heartbeats: asyncio.Task[None] | None = None
        self._relaying: asyncio.Task[None] | None = None
        self._node: JournalNode | None = None
        self._audit_all = audit == "all"
        self._audit_tasks = audit == "tasks"
        self._watches: dict[str, _TaskWatch] = {}
        self.status_listeners: list[Callable[[str, str], None]] = []
        """Called with (task id, status) for each status change a commit of this journal
        recorded (the gateway's event streams: pushed, not polled)."""
        self.writer.on_commit = self._committed

    async def open(self, node: JournalNode) -> None:
        self.node_id = node.node_id
        self._node = node
        self.writer.start(node.fail)
        self._heartbeats = _owned(self._beat(node), node, "mas-journal-heartbeat")
        self._relaying = _owned(self.relay.run(node), node, "mas-outbox-relay")

    async def _beat(self, node: JournalNode) -> None:
        """Keep `agents.last_heartbeat` of this node's running agents fresh (liveness),
        cancel handlers of cancelled tasks (`cancel_cancelled`) and retire agents gone for
        good (`retire_gone`)."""
        node_id = node.node_id
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self.store.touch_agents(node_id)
            except StoreUnavailable as exc:
                # The heartbeat goes stale, which is what readers should see; keep trying.
                # The store logs the outage itself, once.
                _log.debug("heartbeat_failed", node_id=node_id, error=str(exc))
                continue
            await self.time_out_due(node)
            await self.cancel_cancelled(node)
            if self.retire_after is not None:
                await self.retire_gone(node)

    async def time_out_due(self, node: JournalNode) -> list[str]:
        """End `timed_out` the tasks whose deadline passed (any node's heartbeat does it;
        each task ends once), and cancel their handlers on this node; the ended ids."""
        try:
            ended = await self.store.time_out_due(datetime.now(UTC))
        except StoreUnavailable:
            return []  # the store logs its outage; the next beat tries again
        for task_id in ended:
            _log.info("task_timed_out", task_id=task_id)
            node.cancel_task_handlers(task_id)
            for listener in self.status_listeners:
                listener(task_id, "timed_out")
        return ended

    async def charge(self, task_id: str, budget: Budget, tokens: int, cost: float) -> Spent:
        """See `Journal.charge`: counted in the task's record at once (not in the group
        commit: the next call, on any node, must see it).

        Raises:
            StoreUnavailable: the database cannot be reached or refused the write.
        """
        charged = await self.store.charge(task_id, budget, tokens, cost)
        if charged is None:
            # Perhaps created by this node and not committed yet (a local task goes to its
            # agent before the group commit): commit, then count.
            await self.flush()
            charged = await self.store.charge(task_id, budget, tokens, cost)
        if charged is None:
            return Spent(0, 0.0, exceeded=False)
        spent, ended = charged
        watch = self._watches.get(task_id)
        if watch is not None:  # a `?wait` answer shows what it spent
            watch.spent = (spent.tokens, spent.cost)
        await self._resolve_watches(ended)
        for ended_id in ended:
            _log.info(
                "task_budget_exceeded", task_id=ended_id, tokens=spent.tokens, cost=spent.cost
            )
            if self._node is not None:
                self._node.cancel_task_handlers(ended_id)
            for listener in self.status_listeners:
                listener(ended_id, "budget_exceeded")
        return spent

    async def spent(self, task_id: str) -> tuple[int, float]:
        """See `Journal.spent` (an unknown task spent nothing).

        Raises:
            StoreUnavailable: the database cannot be reached.
        """
        task = await self.store.get_task(task_id)
        return (0, 0.0) if task is None else (task.spent_tokens, task.spent_cost)

    async def _resolve_watches(self, ended: list[str]) -> None:
        """Answer the requests waiting for these tasks, which ended outside a commit of
        this journal (a failed read leaves them to find the end by reading later)."""
        for task_id in ended:
            watch = self._watches.get(task_id)
            if watch is None:
                continue
            try:
                task = await self.store.get_task(task_id)
            except StoreUnavailable:
                continue
            if task is None or not task.done:
                continue
            del self._watches[task_id]
            watch.resolve(TaskEnd.of(task))

    async def cancel_cancelled(self, node: JournalNode) -> int:
        """Cancel this node's handlers of tasks that were cancelled (by any gateway);
        returns how many. A gateway cancels its own node's at once; other nodes find out
        here, within a heartbeat."""
        handling = node.handling_tasks()
        if not handling:
            return 0
        try:
            cancelled = await self.store.cancelled_among(handling)
        except StoreUnavailable:
            return 0  # the store logs its outage; the next beat asks again
        return sum(node.cancel_task_handlers(task_id) for task_id in cancelled)

    async def retire_gone(self, node: JournalNode) -> int:
        """Remove the queues of agents gone for good; returns how many were retired.

        An agent stopped (or whose node stopped heartbeating) more than `retire_after`
        seconds ago will not take what waits in its queue: the queue goes, its messages are
        dead-lettered (their tasks end), and a send to it fails at once. `retire_after` is
        longer than a retry or a deferral can keep a message away from its queue. Every node
        does this; the broker says whether anyone still consumes a queue, so a node that is
        alive but could not heartbeat keeps its agents.
        """
        assert self.retire_after is not None
        before = datetime.now(UTC) - timedelta(seconds=self.retire_after)
        try:
            gone = await self.store.agents_to_retire(before)
        except StoreUnavailable:
            return 0  # the store logs its outage; the next beat tries again
        retired = 0
        for agent in gone:
            try:
                if not await node.retire_agent(agent.id):
                    continue
                reason = "node_lost" if agent.status == "running" else "stopped"
                if not await self.store.mark_retired(agent, reason):
                    continue
            except (StoreUnavailable, TransportError) as exc:
                _log.warning("agent_retire_failed", agent_id=agent.id, error=str(exc))
                continue  # the next beat tries again
            retired += 1
            _log.info(
                "agent_retired",
                agent_id=agent.id,
                agent_type=agent.type,
                reason=reason,
                node_id=agent.node_id,
            )
        return retired

    async def close(self) -> None:
        """Hand over what is committed (bounded), commit what is pending, then stop.

        Outbox rows still held (the broker is away) are released for other nodes' relays.
        """
        if self._relaying is not None and not self.writer.crashed:
            # Commit first, so that the relay can still send what those commits decided.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.writer.flush(), self.writer.close_timeout)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.relay.flush(), self.writer.close_timeout)
        for task in (self._heartbeats, self._relaying):
            if task is not None:
                task.cancel()
                # Not `suppress(CancelledError)` around `await task`: that would also swallow
                # a cancellation of this close itself, and the canceller would wait for ever.
                await asyncio.wait([task])
        relaying, self._relaying, self._heartbeats = self._relaying, None, None
        await self.writer.close()
        if relaying is not None:
            await self.relay.release()
        if self.owns_store:
            await self.store.close()

    async def flush(self) -> None:
        """Wait until everything recorded so far is committed, and what those commits
        decided to send has been handed over (or is being retried)."""
        await self.writer.flush()
        if self.relay.held:
            await self.relay.flush()
            await self.writer.flush()

    # -- the outbox --------------------------------------------------------------------------

    def outbox_row(self, message: Message) -> dict[str, Any]:
        """`message` as an outbox row this node holds (its lease starts when it is written)."""
        now = datetime.now(UTC)
        return {
            "id": message.id,
            "message": message.to_dict(),
            "owner": self.node_id,
            "available_at": now,
            "attempts": 0,
            "created_at": now,
        }

    def send_after_commit(
        self, message: Message, *, delivered: bool = False
    ) -> asyncio.Future[None] | None:
        """Send `message` once the next batch commits (it goes into the batch's outbox).

        `delivered`: it was already given to an agent of this process, whose record of
        handling it removes the row. Otherwise returns a future for the first hand-over (see
        `OutboxRelay.hold`).
        """
        self.writer.pending.outbox[message.id] = self.outbox_row(message)
        self.writer.wake()
        return self.relay.hold(message, delivered=delivered)

    def send_committed(self, message: Message) -> asyncio.Future[None] | None:
        """Send `message`, whose outbox row (`outbox_row`) a transaction of its own committed."""
        done = self.relay.hold(message)
        self.relay.committed((message.id,))
        return done

    def discard(self, message_id: str) -> None:
        """`message_id` must not be sent after all (its task failed when it was submitted)."""
        if self.relay.discard(message_id) or self.relay.settled(message_id):
            self.writer.pending.sent_one(message_id, self.node_id)
            self.writer.wake()

    def _sent(self, message_id: str) -> None:
        self.writer.pending.sent_one(message_id, self.node_id)
        self.writer.wake()

    def _undeliverable(self, message: Message, error: MasError) -> None:
        _log.warning(
            "outbox_message_undeliverable",
            message_id=message.id,
            target=message.target,
            error_type=type(error).__name__,
            error=str(error),
        )
        task_id = task_of(message)
        if task_id is not None:
            result = TaskResult.failed(task_id, TaskError(type(error).__name__, str(error)))
            self.task_finished(result, message, 0)
        self._sent(message.id)

    def _audits(self, message: Message) -> bool:
        return self._audit_all or (self._audit_tasks and "task_id" in message.metadata)

    async def handled(
        self, agent_id: str, message: Message, reply: Message | None, delivery: Delivery | None
    ) -> None:
        writer = self.writer
        pending = writer.pending
        audited = self._audits(message)
        if audited and not (message.target or "").startswith("topic:"):
            # One row is both the audit and the idempotency record.
            pending.messages.append(message_row(message, agent_id, reply))
        else:
            if audited:
                pending.messages.append(message_row(message))
            pending.processed.append(
                {
                    "agent_id": agent_id,
                    "message_id": message.id,
                    "reply": reply.to_dict() if reply is not None else None,
                    "processed_at": datetime.now(UTC),
                }
            )
        asker = message.metadata.get(WAKES_KEY)
        if isinstance(asker, str) and reply is not None:
            # A long ask: its asker may have parked. Once the reply is committed, its
            # wake-up goes (`_committed`).
            pending.answered.append(asker)
        if PARENT_KEY in message.metadata:
            # A child task (its id is the message's): handled is done, unless it ended
            # otherwise (its handler returned a TaskResult, it was cancelled).
            pending.completed.append(
                {
                    "task_id": message.id,
                    "result": reply.payload if reply is not None else None,
                    "finished_at": datetime.now(UTC),
                }
            )
        if delivery is not None:
            writer.settle.append(delivery)
        if self.relay.held and self.relay.settled(message.id):
            pending.sent_one(message.id, self.node_id)
        writer.wake()
        if writer.full:
            await writer.wait_for_room()

    def skipped(self, message: Message) -> None:
        """A duplicate was skipped: if it came from this node's outbox, its row may go."""
        if self.relay.held and self.relay.settled(message.id):
            self._sent(message.id)

    def replied(self, reply: Message) -> None:
        if self._audits(reply):
            self.writer.pending.messages.append(message_row(reply))
            self.writer.wake()

    async def recall(self, agent_id: str, limit: int) -> list[tuple[str, Message | None]]:
        return await self.store.recent_processed(agent_id, limit)

    async def handled_elsewhere(self, message_id: str) -> tuple[bool, Message | None]:
        return await self.store.processed_reply(message_id)

    def task_created(self, task: TaskRecord) -> None:
        """A new task (its id never used before): written with the next batch.

        Rows of one batch are applied creations first, so the agent may start on the task
        before this commits, as long as this journal records what it does (a local agent).
        """
        self.writer.pending.created.append(task.row())
        self.writer.wake()

    def watch_task(self, task_id: str) -> asyncio.Future[TaskEnd]:
        """A future for how the task ends, once a commit of this journal records it.

        It resolves from the rows this journal wrote, without reading the database; a task
        that ends on another node never resolves it (read the store for those). Watch
        before reading the task, so that no commit falls between the read and the watch.
        """
        watch = self._watches.get(task_id)
        if watch is None:
            watch = self._watches[task_id] = _TaskWatch()
        future: asyncio.Future[TaskEnd] = asyncio.get_running_loop().create_future()
        watch.futures.append(future)
        return future

    def unwatch_task(self, task_id: str, future: asyncio.Future[TaskEnd]) -> None:
        watch = self._watches.get(task_id)
        if watch is not None and future in watch.futures:
            watch.futures.remove(future)
            if not watch.futures:
                del self._watches[task_id]

    def task_cancelled(self, task: TaskRecord) -> None:
        """The store cancelled `task` (committed): wake whoever waits for its end."""
        for listener in self.status_listeners:
            listener(task.id, task.status)
        watch = self._watches.pop(task.id, None)
        if watch is not None:
            watch.resolve(TaskEnd.of(task))

    def _committed(self, batch: Batch) -> None:
        if batch.outbox:
            self.relay.committed(batch.outbox)
        if batch.answered:
            self.relay.wake_parked(batch.answered)
        if batch.asking:
            self.relay.wake_if_answered(batch.asking)
        for listener in self.status_listeners:
            for row in batch.running:
                listener(row["id"], "running")
            for row in batch.finished:
                listener(row["task_id"], row["status"])
            for row in batch.completed:
                listener(row["task_id"], "succeeded")
        watches = self._watches
        if not watches:
            return
        for row in batch.running:
            watch = watches.get(row["id"])
            if watch is not None and watch.started is None:
                watch.started = row
        for row in batch.finished:
            watch = watches.pop(row["task_id"], None)
            if watch is not None:
                watch.resolve(
                    TaskEnd(
                        row["status"],
                        row["result"],
                        row["error"],
                        row["attempts"],
                        row["finished_at"],
                        watch.started,
                        watch.spent,
                    )
                )

    def step_finished(
        self, agent_id: str, message_id: str, handler: str, record: StepRecord
    ) -> None:
        # Always written, whatever `audit` says: it is what a re-run needs, not an audit.
        self.writer.pending.steps.append(
            {
                "message_id": message_id,
                "handler": handler,
                "seq": record.seq,
                "agent_id": agent_id,
                "name": record.name,
                "kind": record.kind,
                "result": record.result,
                "finished_at": datetime.now(UTC),
            }
        )
        self.writer.wake()

    async def recorded_steps(self, message_id: str, handler: str) -> list[StepRecord]:
        return await self.store.workflow_steps(message_id, handler)

    async def recorded_replies(self, message_ids: list[str]) -> dict[str, Message]:
        return await self.store.replies_among(message_ids)

    async def read_signal(self, task_id: str, name: str, until: float) -> tuple[bool, Any]:
        return await self.store.signal(task_id, name, datetime.fromtimestamp(until, UTC))

    async def parked(
        self, agent_id: str, message: Message, delivery: Delivery | None, waits: list[Wait]
    ) -> None:
        """Commit the steps so far and the wake-up, then settle `delivery`.

        The wake-up is the message itself, marked as a re-run, in its outbox row: due when
        the first wait ends, for whichever node's relay sweeps first, or sent at once when
        a gateway takes one of the awaited signals (`wake`) or a commit records an answer
        to one of the awaited asks (`Batch.answered`).
        """
        wake = self.outbox_row(marked_woken(message, secrets.token_hex(8), waits))
        wake["owner"] = None
        wake["available_at"] = datetime.fromtimestamp(min(wait.until for wait in waits), UTC)
        signals = [
            (wait.task_id, wait.signal, datetime.fromtimestamp(wait.until, UTC))
            for wait in waits
            if wait.task_id is not None and wait.signal is not None
        ]
        asked = [wait.asked for wait in waits if wait.asked is not None]
        if signals:
            await self.writer.flush()
            await self.store.park(wake, signals)
            if self.relay.held:
                # The message's row was this node's (a task's first send, or a wake-up):
                # the wake-up took it over, so the relay neither renews nor deletes it.
                self.relay.settled(message.id)
            if asked:
                self.relay.wake_if_answered({message.id: asked})
            if delivery is not None:
                await delivery.ack()
            return
        # Nothing to lock against: the wake-up goes with the group commit, in the batch that
        # holds the steps so far (`Batch.wakes`).
        if asked:
            # Once committed, the relay looks for answers committed before (`_committed`).
            self.writer.pending.asking[message.id] = asked
        await self._park_with_batch(message, delivery, wake)

    async def _park_with_batch(
        self, message: Message, delivery: Delivery | None, wake: dict[str, Any]
    ) -> None:
        writer = self.writer
        writer.pending.wakes[message.id] = wake
        if self.relay.held:
            self.relay.settled(message.id)  # the wake-up takes the message's row over
        if delivery is not None:
            writer.settle.append(delivery)  # acknowledged once the batch committed
        writer.wake()
        if writer.full:
            await writer.wait_for_room()

    def wake(self, claimed: list[tuple[str, dict[str, Any]]]) -> None:
        """Send these wake-ups of parked handlers, which this node claimed, now."""
        self.relay.take_claimed(claimed)

    def child_task(self, parent_id: str, message: Message) -> None:
        created_by = message.metadata.get(CREATED_BY_KEY)
        child = TaskRecord.new(
            message.id,
            message.type,
            message.payload,
            target=message.target,
            created_by=created_by if isinstance(created_by, str) else None,
            trace_id=message.trace_id,
            parent_id=parent_id,
        )
        self.writer.pending.created.append(child.row())
        self.writer.wake()

    def task_running(self, message: Message, agent_id: str, attempt: int) -> None:
        task_id = task_of(message)
        if task_id is None:
            return
        now = datetime.now(UTC)
        self.writer.pending.running.append(
            {
                "id": task_id,
                "type": message.type,
                "status": "running",
                "target": message.target,
                "payload": message.payload,
                "result": None,
                "error": None,
                "attempts": attempt,
                "created_by": message.sender,
                "trace_id": message.trace_id,
                "created_at": now,
                "started_at": now,
                "finished_at": None,
            }
        )
        self.writer.wake()

    def task_finished(self, result: TaskResult, message: Message, attempt: int) -> None:
        self.writer.pending.finished.append(
            {
                "task_id": result.task_id,
                "status": result.status,
                "result": result.result,
                "error": result.error.to_dict() if result.error else None,
                "attempts": attempt,
                "finished_at": datetime.now(UTC),
            }
        )
        self.writer.wake()

    def dead_lettered(self, letter: DeadLetter) -> None:
        message = letter.message
        error = None
        if letter.error_type is not None or letter.error_message is not None:
            error = {"type": letter.error_type, "message": letter.error_message}
        self.writer.pending.dead_letters.append(
            {
                "id": message.id,
                "message": message.to_dict(),
                "target": str(message.target)[:300],
                "message_type": message.type[:200],
                "reason": letter.reason[:64],
                "agent_id": letter.agent_id,
                "error": error,
                "attempts": letter.attempts,
                "task_id": task_of(message),
                "trace_id": message.trace_id,
                "node_id": self.node_id,
                "status": "dead",
                "created_at": datetime.now(UTC),
            }
        )
        self.writer.wake()
        if self.relay.held and self.relay.settled(letter.message.id):
            self.writer.pending.sent_one(letter.message.id, self.node_id)
            self.writer.wake()
        asker = letter.message.metadata.get(WAKES_KEY)
        if isinstance(asker, str) and (notice := error_notice(letter)) is not None:
            # A long ask, whose asker may have parked: the failure is the answer it wakes
            # to (kept as the question's reply, so an ask of it again gets the same).
            self.writer.pending.processed.append(
                {
                    "agent_id": letter.agent_id or "",
                    "message_id": letter.message.id,
                    "reply": notice.to_dict(),
                    "processed_at": datetime.now(UTC),
                }
            )
            self.writer.pending.answered.append(asker)
            self.writer.wake()
        task_id = task_of(letter.message)
        if task_id is None:
            return
        self.writer.pending.finished.append(
            {
                "task_id": task_id,
                "status": "dead_lettered",
                "result": None,
                "error": {
                    "type": letter.error_type or letter.reason,
                    "message": letter.error_message or letter.reason,
                    "reason": letter.reason,
                    "retryable": False,
                },
                "attempts": letter.attempts,
                "finished_at": datetime.now(UTC),
            }
        )
        self.writer.wake()

    def agent_started(self, agent: StartedAgent) -> None:
        """Record a (re)started agent: what it offers (capability routing reads it), its
        supervisor's path and its restarts (any node's dashboard draws the tree from it)."""
        meta = {
            "capabilities": list(agent.capabilities),
            "supervisor": agent.supervisor,
            "restarts": agent.restarts,
        }
        self._agent(agent.id, agent.type, "running", meta)

    def agent_stopped(self, agent_id: str, agent_type: str, reason: str) -> None:
        self._agent(agent_id, agent_type, "stopped", {"stop_reason": reason})

    async def live_capabilities(self) -> dict[str, tuple[str, ...]]:
        return await self.store.live_capabilities(self.agents_stale_after)

    def _agent(self, agent_id: str, agent_type: str, status: str, meta: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        self.writer.pending.agents.append(
            {
                "id": agent_id,
                "type": agent_type,
                "status": status,
                "node_id": self.node_id,
                "last_heartbeat": now,
                "metadata": meta,
                "created_at": now,
            }
        )
        self.writer.wake()
