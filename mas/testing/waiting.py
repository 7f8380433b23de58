"""Waiting for a condition that nothing signals (a broker's queue depth, a Redis key's TTL)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

__all__ = ["eventually"]


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0, interval: float = 0.02
) -> None:
    """Return once `check()` is true (it may be a coroutine function).

    For state with no event to wait on; the sleep only paces the polling. Where the runtime
    can say when it is done, wait on that instead (`settle()`, `Probe.wait_for`).

    Raises:
        TimeoutError: `check()` was not true within `timeout` seconds.
    """
    async with asyncio.timeout(timeout):
        while True:
            result = check()
            if await result if inspect.isawaitable(result) else result:
                return
            await asyncio.sleep(interval)
