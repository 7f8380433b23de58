"""Back-pressure at the gateway: new work for a target whose broker queue is too deep waits
with the client (429 + Retry-After), not in the broker.

Workers take only what their mailboxes hold; the rest waits in the broker, which is right for
a burst and wrong for a flood: a queue that only grows hides an overload until the broker
runs out of memory. The depth comes from the broker (`Transport.backlog`), read at most once a
second per target and shared by the requests that need it meanwhile, so a busy gateway does
not pay a broker round trip per task. The limit is therefore approximate by a second's worth
of submissions.
"""

from __future__ import annotations

import asyncio

from mas.errors import QueueFull, TransportError, UnknownAgent
from mas.transports.base import Transport

__all__ = ["Backlogs"]

_MAX_KNOWN = 10_000  # targets remembered at once (agent ids are unbounded): then forget all
UNKNOWN = -1
"""The depth when the broker could not be asked (its outage is another check's business)."""


class Backlogs:
    """Refuses new work for a target nobody serves, or with `limit` or more messages waiting
    in the broker."""

    def __init__(self, transport: Transport, *, limit: int, ttl: float = 1.0) -> None:
        self.limit = limit
        self.ttl = ttl
        self._transport = transport
        self._known: dict[str, tuple[float, int | None]] = {}
        self._reading: dict[str, asyncio.Future[int | None]] = {}

    async def check(self, target: str) -> None:
        """Refuse work that would wait for ever or too long, before anything is stored.

        Raises:
            UnknownAgent: no queue serves `target` (404: a typo, or nobody runs that type;
                storing the task would only record a failure).
            QueueFull: `target`'s queue is at the limit (429).
        """
        depth = await self.depth(target)
        if depth is None:
            raise UnknownAgent(target)
        if self.limit and depth >= self.limit:
            raise QueueFull(target, depth, self.limit)

    async def depth(self, target: str) -> int | None:
        """Messages waiting for `target`, at most `ttl` seconds old: None when no queue serves
        it, `UNKNOWN` when the broker could not be asked."""
        loop = asyncio.get_running_loop()
        known = self._known.get(target)
        if known is not None and loop.time() - known[0] < self.ttl:
            return known[1]
        waiting = self._reading.get(target)
        if waiting is not None:
            return await asyncio.shield(waiting)  # another request is reading it now
        future: asyncio.Future[int | None] = loop.create_future()
        self._reading[target] = future
        try:
            depth = await self._transport.backlog(target)
        except TransportError:
            depth = UNKNOWN  # an outage is for the broker check to refuse, not this one
        except BaseException:
            future.set_result(None)  # cancelled: the requests waiting on it go unchecked
            raise
        finally:
            del self._reading[target]
        if len(self._known) >= _MAX_KNOWN:
            self._known.clear()
        self._known[target] = (loop.time(), depth)
        future.set_result(depth)
        return depth
