"""OutboxRelay: sends what a commit decided to send, and what a crash left unsent.

The transactional outbox (DESIGN §9). A message whose sending follows from a commit (a new
task's message; later a workflow's children, replies and timers) is written in that commit
as an `outbox` row. After the commit this relay hands it over (to an agent of this process
or to the broker) and deletes the row once it is on its way; a message an agent of this
process took keeps its row until that agent has handled (or dead-lettered) it, and the row
goes in the commit that records so. Nothing between the commit and the wire can lose it:

- the broker is away: the relay keeps the message and tries again, backing off;
- this process dies: its rows stay; once their lease (`available_at`) has run out, any
  node's relay claims them and sends them again, marked as re-sent so that the consumer asks
  the record before handling them;
- the database is away: nothing commits, so nothing was promised; what was queued is sent
  once its commit happens.

While this relay holds rows (a long handler, a broker outage), it renews their lease.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import anyio
import structlog

from mas.actors.workflow import DEADLINE_KEY
from mas.errors import (
    AgentStopped,
    InvalidMessage,
    MailboxFull,
    MasError,
    RuntimeNotRunning,
    StoreUnavailable,
    TransportError,
    UnknownCapability,
)
from mas.messages import Message

if TYPE_CHECKING:
    from mas.actors.journal import JournalNode
    from mas.persistence.store import Store

__all__ = ["OutboxRelay"]

_log = structlog.get_logger("mas.outbox")

# Worth trying again later: the broker (or the local agent) cannot take the message now.
_TRANSIENT = (TransportError, MailboxFull, AgentStopped, RuntimeNotRunning)

State = Literal["uncommitted", "queued", "sending", "retry", "local", "settled"]


class _Entry:
    """One message this relay is responsible for, from its decision until it is on its way."""

    __slots__ = ("done", "message", "resent", "state")

    def __init__(self, message: Message, state: State, *, resent: bool = False) -> None:
        self.message = message
        self.state: State = state
        self.resent = resent
        self.done: asyncio.Future[None] | None = None

    def resolve(self, error: BaseException | None = None) -> None:
        """Tell whoever waits how the first hand-over went (later ones are the relay's)."""
        done = self.done
        if done is not None and not done.done():
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)
                done.exception()  # retrieved: nobody may be waiting any more


class OutboxRelay:
    """Hands over committed outbox messages and recovers rows whose owner went away.

    Args:
        store: where the rows are (claims and lease renewals are its own transactions).
        on_sent: called with a message id whose row may go (the journal deletes it with its
            next batch).
        on_undeliverable: called with a message nobody can ever take (no such address), so
            the journal can record its task failed; the row goes too.
        lease: seconds a row stays this relay's after it was written or last renewed.
        sweep_interval: seconds between looks for rows whose lease has run out.
        concurrency: hand-overs in flight at once (a publish waits for the broker's confirm).
    """

    def __init__(
        self,
        store: Store,
        *,
        on_sent: Callable[[str], None],
        on_undeliverable: Callable[[Message, MasError], None],
        lease: float = 10.0,
        sweep_interval: float = 1.0,
        concurrency: int = 64,
        retry_max: float = 5.0,
        claim_batch: int = 100,
    ) -> None:
        self.store = store
        self.lease = lease
        self.sweep_interval = sweep_interval
        self.retry_max = retry_max
        self.claim_batch = claim_batch
        self._on_sent = on_sent
        self._on_undeliverable = on_undeliverable
        self._node: JournalNode | None = None
        self._entries: dict[str, _Entry] = {}
        self._queue: deque[_Entry] = deque()
        self._retry: list[_Entry] = []
        self._retry_at = 0.0
        self._delay = 0.05
        self._sending = 0
        self._limiter = asyncio.Semaphore(concurrency)
        self._wake = asyncio.Event()
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._renewed_at = 0.0
        self._to_wake: set[str] = set()
        self._to_check: dict[str, list[str]] = {}
        self._waking = asyncio.Event()
        self.failing = False
        """The last hand-over failed because the broker (or agent) could not take it."""
        self.resent = 0
        """Messages claimed from the outbox after their lease ran out, and sent again."""

    # -- what the journal tells the relay ----------------------------------------------------

    def hold(self, message: Message, *, delivered: bool = False) -> asyncio.Future[None] | None:
        """`message`'s row was appended to the journal's batch; hand it over after the commit.

        `delivered`: an agent of this process already has it (the row goes when that agent
        has handled it). Otherwise returns a future for the first hand-over: its result is
        None, `UnknownAgent` (nobody can take it; the relay recorded that), or the transient
        error of a first attempt that failed (the relay keeps trying).
        """
        if delivered:
            self._entries[message.id] = _Entry(message, "local")
            return None
        entry = self._entries[message.id] = _Entry(message, "uncommitted")
        entry.done = asyncio.get_running_loop().create_future()
        return entry.done

    def committed(self, message_ids: Iterable[str]) -> None:
        """The rows of these messages are committed: hand over those still to be sent."""
        entries = self._entries
        for message_id in message_ids:
            entry = entries.get(message_id)
            if entry is not None and entry.state == "uncommitted":
                self._enqueue(entry)

    def settled(self, message_id: str) -> bool:
        """An agent of this process handled (or dead-lettered) the message: True when the
        relay held it, and its row may go."""
        entry = self._entries.get(message_id)
        if entry is None or entry.state not in ("local", "sending"):
            return False
        if entry.state == "sending":
            entry.state = "settled"  # handled before its hand-over returned
        else:
            del self._entries[message_id]
        return True

    def discard(self, message_id: str) -> bool:
        """The message must not go (its task failed at submission or was cancelled): True
        when the relay held it. One already being sent cannot be called back."""
        entry = self._entries.get(message_id)
        if entry is None or entry.state == "sending":
            return False
        del self._entries[message_id]
        if entry.state == "queued":
            self._queue.remove(entry)
        elif entry.state == "retry":
            self._retry.remove(entry)
            if not self._retry and not self._sending:
                self.failing = False  # nothing left to find out with: let the next one try
        entry.resolve(None)
        return True

    def wake_parked(self, message_ids: Iterable[str]) -> None:
        """Send the wake-ups of these parked handlers now: a commit recorded an answer to an
        ask they wait for. A handler not parked (or whose wake-up another relay claimed) is
        left alone."""
        self._to_wake.update(message_ids)
        self._waking.set()

    def wake_if_answered(self, asking: dict[str, list[str]]) -> None:
        """These handlers' parks on asks are committed (message id: the asks' message
        ids): wake those with an ask answered already.

        An answer's commit wakes its parked asker only if it came after the park's (its
        update finds the wake-up); this read, after the park's commit, sees any answer
        committed before. Between the two, no answer goes unnoticed, with no lock: each
        side writes, commits, then looks for the other's write.
        """
        self._to_check.update(asking)
        self._waking.set()

    @property
    def held(self) -> int:
        """Messages this relay is responsible for (not yet on their way)."""
        return len(self._entries)

    async def flush(self) -> None:
        """Wait until nothing committed waits to be handed over (retries excepted)."""
        while self._queue or self._sending:
            self._quiet.clear()
            await self._quiet.wait()

    # -- running -----------------------------------------------------------------------------

    async def run(self, node: JournalNode) -> None:
        """Hand over what is queued and sweep for abandoned rows until cancelled."""
        self._node = node
        async with anyio.create_task_group() as group:
            group.start_soon(self._sweep_forever)
            group.start_soon(self._wake_parked_forever)
            while True:
                entry = await self._next()
                await self._limiter.acquire()
                entry.state = "sending"
                self._sending += 1
                group.start_soon(self._hand_over, entry)

    async def release(self) -> None:
        """Let other nodes' relays take this node's rows at once (it is stopping)."""
        node = self._node
        if node is None or not self._entries:
            return
        try:
            with anyio.fail_after(self.lease / 2):
                await self.store.renew_outbox(node.node_id, datetime.now(UTC))
        except (StoreUnavailable, TimeoutError) as exc:
            _log.warning("outbox_release_failed", held=len(self._entries), error=str(exc))

    def _enqueue(self, entry: _Entry) -> None:
        entry.state = "queued"
        self._queue.append(entry)
        self._quiet.clear()
        self._wake.set()

    async def _next(self) -> _Entry:
        loop = asyncio.get_running_loop()
        while True:
            if self._queue:
                return self._queue.popleft()
            if not self._sending:
                self._quiet.set()
            timeout = None
            if self._retry:
                timeout = self._retry_at - loop.time()
                if timeout <= 0:
                    retry, self._retry, self._retry_at = self._retry, [], 0.0
                    for entry in retry:
                        self._enqueue(entry)
                    continue
            self._wake.clear()
            with anyio.move_on_after(timeout):
                await self._wake.wait()

    async def _hand_over(self, entry: _Entry) -> None:
        assert self._node is not None
        message = entry.message
        try:
            local = await self._node.hand_over(message, resent=entry.resent)
        except _TRANSIENT as exc:
            self._failed(entry, exc)
        except UnknownCapability as exc:
            self._entries.pop(message.id, None)
            delay = provider_retry_delay(message)
            if delay is None:  # no deadline, or too close to it: the task fails now
                self._on_undeliverable(message, exc)
                entry.resolve(exc)
            else:
                entry.resolve(None)
                await self._later(message, delay)
        except MasError as exc:  # no such address, too large, not a valid message
            self._entries.pop(message.id, None)
            self._on_undeliverable(message, exc)
            entry.resolve(exc)
        else:
            if self.failing:
                self.failing = False
                _log.info("outbox_send_recovered", held=len(self._entries))
            self._delay = 0.05
            if local and entry.state == "sending":
                entry.state = "local"  # its row goes when the agent has handled it
            else:
                self._entries.pop(message.id, None)
                self._on_sent(message.id)
            entry.resolve(None)
        finally:
            self._sending -= 1
            self._limiter.release()
            if not self._sending and not self._queue:
                self._quiet.set()

    async def _later(self, message: Message, delay: float) -> None:
        """Send `message` again in `delay` seconds, from any node: its row is due then,
        held by no node (a task waiting for an agent that offers its capability)."""
        assert self._node is not None
        until = datetime.now(UTC) + timedelta(seconds=delay)
        try:
            with anyio.fail_after(max(self.lease / 2, 1.0)):
                await self.store.delay_outbox(message.id, self._node.node_id, until)
        except (StoreUnavailable, TimeoutError) as exc:
            # Its lease runs out instead, and any relay sends it again then.
            _log.debug("outbox_delay_failed", message_id=message.id, error=str(exc))
            return
        _log.debug("outbox_message_delayed", message_id=message.id, target=message.target)

    def _failed(self, entry: _Entry, error: BaseException) -> None:
        if not self.failing:
            self.failing = True
            _log.warning(
                "outbox_send_failed",
                message_id=entry.message.id,
                target=entry.message.target,
                error_type=type(error).__name__,
                error=str(error),
                hint="kept, and sent again once the broker (or agent) takes it",
            )
        if entry.state == "settled":  # handled here after all, while the error came back
            self._entries.pop(entry.message.id, None)
            self._on_sent(entry.message.id)
            return
        entry.state = "retry"
        self._retry.append(entry)
        if not self._retry_at:
            self._retry_at = asyncio.get_running_loop().time() + self._delay
            self._delay = min(self._delay * 2, self.retry_max)
        self._wake.set()
        entry.resolve(error)

    async def _wake_parked_forever(self) -> None:
        """Claim and send the wake-ups `wake_parked` asked for, and those of the parks
        `wake_if_answered` finds answered: all that came meanwhile in one read and one
        update. While the database is away, keep them and try again (backing off)."""
        node = self._node
        assert node is not None
        delay = 0.05
        while True:
            await self._waking.wait()
            self._waking.clear()
            ids, self._to_wake = self._to_wake, set()
            checks, self._to_check = self._to_check, {}
            try:
                with anyio.fail_after(max(self.lease / 2, 1.0)):
                    if checks:
                        asked = [ask for asks in checks.values() for ask in asks]
                        answered = (await self.store.replies_among(asked)).keys()
                        ids |= {
                            parked
                            for parked, asks in checks.items()
                            if not answered.isdisjoint(asks)
                        }
                        checks = {}
                    until = datetime.now(UTC) + timedelta(seconds=self.lease)
                    claimed = await self.store.wake_parked(list(ids), node.node_id, until)
            except (StoreUnavailable, TimeoutError) as exc:
                _log.debug("outbox_wake_failed", handlers=len(ids), error=str(exc))
                self._to_wake |= ids
                self._to_check.update(checks)
                await anyio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
                self._waking.set()
                continue
            delay = 0.05
            self.take_claimed(claimed)

    # -- recovery ----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            await anyio.sleep(self.sweep_interval)
            # A full claim may have left more due (many timers ending at once): go on.
            while await self.sweep() == self.claim_batch:
                pass

    async def sweep(self) -> int:
        """Renew this relay's leases, and claim rows whose lease ran out; returns how many
        rows were claimed (to be sent again)."""
        node = self._node
        assert node is not None, "sweep() before run()"
        loop = asyncio.get_running_loop()
        now = datetime.now(UTC)
        until = now + timedelta(seconds=self.lease)
        try:
            with anyio.fail_after(max(self.lease / 2, 1.0)):
                if self._entries and loop.time() >= self._renewed_at + self.lease / 3:
                    await self.store.renew_outbox(node.node_id, until)
                    self._renewed_at = loop.time()
                if self.failing:
                    return 0  # take no more work while the broker refuses ours
                claimed = await self.store.claim_outbox(
                    node.node_id, now, until, limit=self.claim_batch
                )
        except (StoreUnavailable, TimeoutError) as exc:
            # The store logs the database's outage, once; this is one of its consequences.
            _log.debug("outbox_sweep_failed", error_type=type(exc).__name__, error=str(exc))
            return 0
        self.take_claimed(claimed)
        return len(claimed)

    def take_claimed(self, claimed: list[tuple[str, dict[str, Any]]]) -> None:
        """Send again these rows (message id, message), which this node claimed: their
        lease ran out, or they are parked handlers' wake-ups that came due."""
        for message_id, data in claimed:
            if message_id in self._entries:
                continue  # ours already: its lease lapsed while the database was away
            try:
                message = Message.from_dict(data)
            except InvalidMessage as exc:  # written by this code, so a bug or a hand edit
                _log.error("outbox_row_invalid", message_id=message_id, error=str(exc))
                self._on_sent(message_id)
                continue
            self.resent += 1
            _log.info("outbox_message_resent", message_id=message_id, target=message.target)
            entry = self._entries[message_id] = _Entry(message, "queued", resent=True)
            self._enqueue(entry)


_PROVIDER_RETRY_FIRST = 0.1
_PROVIDER_RETRY_MAX = 30.0
_PROVIDER_LAST_TRY = 0.25
"""Seconds before a task's deadline that its last look for a capable agent happens: room
for that look (a due row swept, handed over, the failure recorded) to end the task `failed`
naming the capability before a heartbeat's deadline sweep ends it `timed_out` (at 0.05 s a
loaded machine lost that race now and then)."""


def provider_retry_delay(message: Message) -> float | None:
    """Seconds until `message`, to a capability nobody offers, is sent again; None when it
    has no deadline (`DEADLINE_KEY`) or its deadline is too close: it fails now.

    The wait grows with the time already waited (half of it: about x1.5 a try), from
    0.1 s to at most 30 s, and the last try comes just before the deadline.
    """
    deadline = message.metadata.get(DEADLINE_KEY)
    if not isinstance(deadline, int | float):
        return None
    now = time.time()
    left = deadline - now - _PROVIDER_LAST_TRY
    if left <= 0:
        return None
    waited = now - message.created_at.timestamp()
    return min(max(waited / 2, _PROVIDER_RETRY_FIRST), _PROVIDER_RETRY_MAX, left)
