"""Task event streams: wake each open stream when its task's status changes, without polling.

A stream of `GET /tasks/{id}/events` used to re-read its task from the database twice a
second: 200 streams on an idle task kept most of a core busy. Now a change this node commits
is pushed by its journal (`StoreJournal.status_listeners`), and a change another node records
(a worker, in distributed mode) is found by ONE poller per gateway process that reads the
status of every watched task in one query per interval, and runs only while a stream is open.
A stream reads its task again only when it was woken. Each caller (token subject) may hold
at most `MAS_API__MAX_STREAMS_PER_CALLER` streams at once (the dashboard's event stream counts
too, as a slot that watches no task): an open stream holds a connection and a slot here until
its task ends, it times out, or its client goes away.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import structlog
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from mas.errors import MasError, TooManyStreams
from mas.persistence.store import Store

__all__ = ["TaskStream", "TaskStreams", "held_event_stream"]

_log = structlog.get_logger("mas.api.streams")


class TaskStream:
    """One open stream's slot: woken when its task's status may have changed."""

    __slots__ = ("_changed", "_hub", "caller", "closed", "task_id")

    def __init__(self, hub: TaskStreams, task_id: str | None, caller: str) -> None:
        self._hub = hub
        self.task_id = task_id
        self.caller = caller
        self.closed = False
        self._changed = asyncio.Event()

    def wake(self) -> None:
        self._changed.set()

    def seen(self, status: str) -> None:
        """The status the stream read: the baseline the shared poll compares against."""
        self._hub.note_seen(self, status)

    async def changed(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a change; False if none came."""
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        self._changed.clear()
        return True

    def close(self) -> None:
        """Give the slot back (idempotent): the stream ended or its client went away."""
        if not self.closed:
            self.closed = True
            self._hub.release(self)


class _Watched:
    __slots__ = ("status", "streams")

    def __init__(self) -> None:
        self.status: str | None = None
        self.streams: set[TaskStream] = set()


class TaskStreams:
    """The gateway's open task streams, per task and per caller, and their shared poller."""

    def __init__(self, store: Store, *, max_per_caller: int, interval: float) -> None:
        self.store = store
        self.max_per_caller = max_per_caller
        self.interval = interval
        self.polls = 0
        """Store reads the shared poller made (one per interval while a stream is open)."""
        self._tasks: dict[str, _Watched] = {}
        self._per_caller: Counter[str] = Counter()
        self._poller: asyncio.Task[None] | None = None
        self._failing = False
        self._closed = False

    @property
    def open_streams(self) -> int:
        return sum(self._per_caller.values())

    def open(self, task_id: str | None, caller: str) -> TaskStream:
        """A slot for a new stream of `task_id` (None: a stream that watches no task, which
        only counts towards the caller's maximum).

        Open it before reading the task: a change committed after this wakes the stream,
        so none falls between the read and the watch.

        Raises:
            TooManyStreams: `caller` holds its maximum of open streams.
        """
        if self._per_caller[caller] >= self.max_per_caller:
            raise TooManyStreams(caller, self.max_per_caller)
        self._per_caller[caller] += 1
        stream = TaskStream(self, task_id, caller)
        if task_id is None:
            return stream
        self._tasks.setdefault(task_id, _Watched()).streams.add(stream)
        if self._poller is None and not self._closed:
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return stream

    def changed(self, task_id: str, status: str) -> None:
        """`task_id` is now in `status` (a commit here, or the poll): wake its streams."""
        watched = self._tasks.get(task_id)
        if watched is None or watched.status == status:
            return
        watched.status = status
        for stream in watched.streams:
            stream.wake()

    async def close(self) -> None:
        """Stop the poller (the gateway is stopping); open streams end on their own."""
        self._closed = True
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)

    def note_seen(self, stream: TaskStream, status: str) -> None:
        """`stream` read its task in `status` (see `TaskStream.seen`)."""
        watched = None if stream.task_id is None else self._tasks.get(stream.task_id)
        if watched is None:
            return
        if watched.status is None:
            watched.status = status
        elif watched.status != status:
            stream.wake()  # it read before a change the hub already knows of

    def release(self, stream: TaskStream) -> None:
        """`stream`'s slot is free again (see `TaskStream.close`)."""
        self._per_caller[stream.caller] -= 1
        if self._per_caller[stream.caller] <= 0:
            del self._per_caller[stream.caller]
        task_id = stream.task_id
        if task_id is None:
            return  # it watched no task
        watched = self._tasks.get(task_id)
        if watched is not None:
            watched.streams.discard(stream)
            if not watched.streams:
                del self._tasks[task_id]

    async def _poll(self) -> None:
        """Read every watched task's status once per interval, while any stream is open."""
        try:
            while self._tasks:
                await asyncio.sleep(self.interval)
                if not self._tasks:
                    break
                self.polls += 1
                try:
                    statuses = await self.store.task_statuses(list(self._tasks))
                except Exception as exc:
                    # Streams keep waiting (and end on their timeout); said once per outage.
                    # Not only MasError: a bug here must be seen, and must not end the poll.
                    if not self._failing:
                        self._failing = True
                        _log.warning(
                            "task_streams_poll_failed",
                            error_type=type(exc).__name__,
                            error=str(exc),
                            exc_info=None if isinstance(exc, MasError) else exc,
                        )
                    continue
                self._failing = False
                for task_id, status in statuses.items():
                    self.changed(task_id, status)
        finally:
            if self._poller is asyncio.current_task():
                self._poller = None


def held_event_stream(
    slot: TaskStream, events: AsyncIterator[bytes], headers: dict[str, str]
) -> StreamingResponse:
    """A `text/event-stream` response of `events` that gives `slot` back when it ends: the
    events ran out (the task ended, the time was up), or the client went away, before the
    first event too (when the body never started)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield event
        finally:
            slot.close()

    async def release() -> None:
        slot.close()  # idempotent: after `body`, or in its place when it never ran

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", **headers},
        background=BackgroundTask(release),
    )
