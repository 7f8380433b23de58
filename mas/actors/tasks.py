"""TaskOwner: every task and timer of a runtime has this one owner.

Structured concurrency without a task per idle agent: drain tasks (one per busy agent),
background jobs and backoff timers are tracked here, so the runtime can wait for all of them
(`settle`), fire what is left at shutdown, and fail loudly when one of them crashes instead
of losing the error in a forgotten task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio
import structlog

from mas.actors.clock import Clock, Timer

__all__ = ["TaskOwner"]

_log = structlog.get_logger("mas.runtime")


class TaskOwner:
    """Owns drain tasks, background tasks and clock timers; reports crashes to `on_error`."""

    def __init__(self, clock: Clock, on_error: Callable[[BaseException], None]) -> None:
        self.clock = clock
        self._on_error = on_error
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._drains: set[asyncio.Task[None]] = set()
        self._timers: dict[Timer, Callable[[], Awaitable[None]]] = {}
        self._no_tasks = asyncio.Event()
        self._no_timers = asyncio.Event()
        self._autojump_scheduled = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach to the running loop (at runtime start)."""
        self._loop = loop
        self._no_tasks.set()
        self._no_timers.set()

    @property
    def busy(self) -> bool:
        """A task (drain or background) is running."""
        return bool(self._tasks or self._drains)

    @property
    def timers(self) -> int:
        return len(self._timers)

    def owns(self, task: asyncio.Task[Any] | None) -> bool:
        return task in self._tasks or task in self._drains

    def start_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coro` as an owned task: waited for by `settle`, its crash fails the runtime."""
        assert self._loop is not None, "TaskOwner used before bind()"
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        self._no_tasks.clear()
        task.add_done_callback(self._task_done)
        return task

    def start_drain(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Start an agent's drain task; it reports its own end through `drain_done`.

        Drain tasks catch their errors themselves, which saves a done-callback (a loop
        callback) per activation on the message fast path.
        """
        assert self._loop is not None, "TaskOwner used before bind()"
        task = self._loop.create_task(coro)
        self._drains.add(task)
        self._no_tasks.clear()
        return task

    def drain_done(self, task: asyncio.Task[None] | None) -> None:
        self._drains.discard(task)
        if not self._drains and not self._tasks:
            self._became_idle()

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not self._tasks and not self._drains:
            self._became_idle()
        if not task.cancelled():
            error = task.exception()
            if error is not None:
                _log.error(
                    "runtime_task_crashed", error_type=type(error).__name__, error=str(error)
                )
                self._on_error(error)

    def _became_idle(self) -> None:
        self._no_tasks.set()
        if self._timers:
            self._schedule_autojump()

    def call_later(self, delay: float, job: Callable[[], Awaitable[None]]) -> Timer:
        """Run `job()` as an owned task after `delay` seconds of the clock (`cancel_timer`
        takes it back)."""

        def fire() -> None:
            if self._timers.pop(timer, None) is None:
                return
            if not self._timers:
                self._no_timers.set()
            self.start_task(_await(job))

        timer = self.clock.call_later(delay, fire)
        self._timers[timer] = job
        self._no_timers.clear()
        if not self.busy:
            self._schedule_autojump()
        return timer

    def cancel_timer(self, timer: Timer) -> None:
        """Take back a `call_later` job that has not run yet (nothing when it has)."""
        if self._timers.pop(timer, None) is not None:
            timer.cancel()
            if not self._timers:
                self._no_timers.set()

    async def sleep(self, delay: float) -> None:
        """Sleep `delay` seconds of the clock as an owned timer: a test clock jumps over it
        when nothing else runs, `settle()` counts it (as it counts a retry's backoff), and
        a shutdown (`flush_timers`) wakes it early."""
        assert self._loop is not None
        woken: asyncio.Future[None] = self._loop.create_future()

        async def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_later(delay, wake)
        try:
            await woken
        finally:
            self.cancel_timer(timer)

    def _schedule_autojump(self) -> None:
        """With an autojumping test clock, skip dead time whenever nothing else runs."""
        if self._autojump_scheduled or not getattr(self.clock, "autojump", False):
            return
        assert self._loop is not None
        self._autojump_scheduled = True
        self._loop.call_soon(self._autojump)

    def _autojump(self) -> None:
        self._autojump_scheduled = False
        if self._timers and not self.busy:
            self.clock.skip_to_next_timer()  # type: ignore[attr-defined]

    def flush_timers(self) -> None:
        """Run every pending job now (shutdown: pending retries must reach a verdict)."""
        timers, self._timers = self._timers, {}
        for timer, job in timers.items():
            timer.cancel()
            self.start_task(_await(job))
        self._no_timers.set()

    async def settle(self, *, advance_clock: bool = True) -> None:
        """Wait until no task runs and no timer is pending (see `Runtime.settle`)."""
        while True:
            if self.busy:
                await self._no_tasks.wait()
                continue
            if self._timers:
                skip = getattr(self.clock, "skip_to_next_timer", None)
                if skip is None:
                    await self._no_timers.wait()  # a real clock: the timers will fire
                    continue
                if not advance_clock:
                    return  # a manual clock the caller wants to move by hand
                if skip():
                    await asyncio.sleep(0)
                    continue
            await asyncio.sleep(0)  # let callbacks that were just scheduled run
            if not self.busy and not self._timers:
                return

    async def wait_all(self, timeout: float) -> None:
        """Wait (bounded) for the tasks still running after shutdown, then cancel the rest.

        A task group's rule: nothing the runtime started runs once it has stopped. Tasks
        still running after `timeout` are cancelled and awaited; pending timers are
        dropped. An error a task raises while it is cancelled still fails the runtime
        (through `_task_done`), so no failure is lost on the way out.
        """
        with anyio.move_on_after(timeout):
            while self.busy:
                await self._no_tasks.wait()
        await self.cancel_all()

    async def cancel_all(self) -> None:
        """Cancel every owned task and timer, and wait until the tasks have ended."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._no_timers.set()
        # A task may start another while it is cancelled (a `finally` that sends): loop
        # until none is left.
        current = asyncio.current_task()  # an owned task that stops the runtime goes on
        while running := (self._tasks | self._drains) - {current}:
            for task in running:
                task.cancel()
            await asyncio.wait(running)
            # Done-callbacks (`_task_done`) run on the next turn of the loop.
            await asyncio.sleep(0)


async def _await(job: Callable[[], Awaitable[None]]) -> None:
    await job()
