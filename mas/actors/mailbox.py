"""A bounded mailbox with a per-agent overflow policy.

Semantics follow anyio's memory streams: `put` waits while the mailbox is full (policy
`block`), `put_nowait` raises a typed `MailboxFull` (policy `reject`), and `drop_oldest`
makes room by handing the oldest item back to the caller, which dead-letters it. The deque is
allocated on first use so that an idle agent's mailbox costs a few dozen bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, Literal, TypeVar

from mas.errors import AgentStopped, MailboxFull

__all__ = ["Mailbox", "Overflow"]

Overflow = Literal["block", "reject", "drop_oldest"]
T = TypeVar("T")


class Mailbox(Generic[T]):
    """FIFO of pending items for one agent; `owner` names the agent in errors."""

    __slots__ = ("_items", "_putters", "capacity", "overflow", "owner")

    def __init__(self, owner: str, capacity: int, overflow: Overflow) -> None:
        self.owner = owner
        self.capacity = capacity
        self.overflow: Overflow = overflow
        self._items: deque[T] | None = None
        self._putters: deque[asyncio.Future[None]] | None = None

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    def try_put(self, item: T) -> bool:
        """Enqueue if there is room now; False otherwise (nothing changes).

        The senders' fast path: one length check, no policy, no exception to catch. A caller
        that gets False takes `put` or `put_nowait`, which apply the overflow policy.
        """
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) < self.capacity:
            items.append(item)
            return True
        return False

    def put_nowait(self, item: T) -> T | None:
        """Enqueue without waiting; returns the item dropped to make room, if any.

        Raises:
            MailboxFull: full, and the policy is `reject` or `block` (a caller that can wait
                uses `put`).
        """
        items = self._items
        if items is None:
            items = self._items = deque()
        if len(items) < self.capacity:
            items.append(item)
            return None
        if self.overflow == "drop_oldest":
            dropped = items.popleft()
            items.append(item)
            return dropped
        raise MailboxFull(self.owner, self.capacity)

    async def put(self, item: T) -> T | None:
        """Enqueue, waiting for room when the policy is `block` (back-pressure)."""
        items = self._items
        if items is not None and len(items) >= self.capacity and self.overflow == "block":
            putters = self._putters
            if putters is None:
                putters = self._putters = deque()
            while len(items) >= self.capacity:
                waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                putters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    waiter.cancel()
                    # Pass our wake-up on so that room is not wasted.
                    if len(items) < self.capacity:
                        self._wake_putter()
                    raise
        return self.put_nowait(item)

    def put_force(self, item: T) -> None:
        """Enqueue past the capacity: for retries of messages that were already admitted."""
        if self._items is None:
            self._items = deque()
        self._items.append(item)

    def put_front(self, item: T) -> None:
        """Return an item taken but not handled (its handler was cancelled) to the head."""
        if self._items is None:
            self._items = deque()
        self._items.appendleft(item)

    def get_nowait(self) -> T | None:
        """The next item, or None when empty; wakes one blocked sender."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if self._putters:
            self._wake_putter()
        return item

    def _wake_putter(self) -> None:
        putters = self._putters
        while putters:
            waiter = putters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> list[T]:
        """Empty the mailbox for good: returns what was left and fails blocked senders."""
        left = list(self._items) if self._items else []
        self._items = None
        putters, self._putters = self._putters, None
        while putters:
            waiter = putters.popleft()
            if not waiter.done():
                waiter.set_exception(AgentStopped(self.owner))
        return left
