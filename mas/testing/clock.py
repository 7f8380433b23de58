"""A clock that moves only when told, so backoff and restart delays take no real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable

__all__ = ["ManualClock"]


class _ManualTimer:
    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Time starts at 0 and advances by `advance()` or `skip_to_next_timer()` only.

    With `autojump` (the test runtime's default), the runtime jumps to the next timer as soon
    as it has nothing else to do: backoff delays take no real time, and a test that awaits a
    retried `ask` needs no help. Turn it off to observe the state between two timers.
    """

    def __init__(self, *, autojump: bool = True) -> None:
        self.autojump = autojump
        self._now = 0.0
        self._heap: list[tuple[float, int, _ManualTimer]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _ManualTimer:
        timer = _ManualTimer(self._now + max(delay, 0.0), callback)
        heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
        return timer

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        self.call_later(delay, wake)
        await future

    @property
    def pending(self) -> int:
        """Timers scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._heap if not timer.cancelled)

    def advance(self, seconds: float) -> int:
        """Move time forward, firing every timer that falls due; returns how many fired."""
        target = self._now + seconds
        fired = 0
        while self._heap and self._heap[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._heap)
            self._now = max(self._now, deadline)
            if not timer.cancelled:
                timer.callback()
                fired += 1
        self._now = target
        return fired

    def skip_to_next_timer(self) -> bool:
        """Jump to the next live timer and fire it (and any due at the same instant)."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return False
        self.advance(max(self._heap[0][0] - self._now, 0.0))
        return True
