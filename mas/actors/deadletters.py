"""Dead letters: messages that could not be handled, kept as a stream users can watch.

Nothing is dropped silently: every message that runs out of attempts, overflows a
`drop_oldest` mailbox, is addressed to nobody, or is left in the mailbox of an agent that
stopped becomes a `DeadLetter` here — counted, logged, kept in a bounded recent buffer, and
pushed to every subscriber.
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import structlog

from mas.messages import Message

__all__ = ["DeadLetter", "DeadLetterSubscription", "DeadLetters"]

_log = structlog.get_logger("mas.dead_letters")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that could not be handled, with why and how often it was tried.

    `reason` is one of: `max_attempts` (the handler failed on every attempt), `rejected`
    (the handler raised `Rejected`: the message is at fault, and every attempt would fail
    alike, so there is none but the first),
    `mailbox_overflow` (dropped by a `drop_oldest` mailbox), `unknown_address`,
    `agent_stopped` (still queued when its agent stopped), `invalid_message` (undecodable),
    `no_capable_agent` (no live agent offers the capability it was sent to),
    `workflow_diverged` (a re-run of its handler took another path than the recorded one).
    """

    message: Message
    reason: str
    agent_id: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    attempts: int = 0
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class DeadLetterSubscription:
    """An async iterator over dead letters recorded after it was opened.

    Use as `async with rt.dead_letters.subscribe() as letters: async for letter in letters`.
    A subscriber that falls more than `buffer` letters behind loses the oldest ones (counted in
    `missed`) rather than slowing the runtime down.
    """

    def __init__(self, owner: DeadLetters, buffer: int) -> None:
        self._owner = owner
        self._items: deque[DeadLetter] = deque(maxlen=buffer)
        self._waiter: asyncio.Future[None] | None = None
        self.missed = 0

    def _push(self, letter: DeadLetter) -> None:
        if len(self._items) == self._items.maxlen:
            self.missed += 1
        self._items.append(letter)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> DeadLetter:
        """The next dead letter, waiting for one if none is buffered."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[DeadLetter]:
        return self

    async def __anext__(self) -> DeadLetter:
        return await self.get()

    async def __aenter__(self) -> DeadLetterSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._owner._subscribers.discard(self)


class DeadLetters:
    """The runtime's dead-letter stream: `count`, `by_reason`, `recent`, `subscribe()`."""

    def __init__(self, keep: int = 1000) -> None:
        self.count = 0
        self.by_reason: Counter[str] = Counter()
        self.recent: deque[DeadLetter] = deque(maxlen=keep)
        self._subscribers: set[DeadLetterSubscription] = set()

    def record(self, letter: DeadLetter) -> None:
        self.count += 1
        self.by_reason[letter.reason] += 1
        self.recent.append(letter)
        _log.warning(
            "message_dead_lettered",
            message_id=letter.message.id,
            message_type=letter.message.type,
            target=letter.message.target,
            trace_id=letter.message.trace_id,
            agent_id=letter.agent_id,
            reason=letter.reason,
            attempts=letter.attempts,
            error_type=letter.error_type,
            error=letter.error_message,
        )
        for subscriber in list(self._subscribers):
            subscriber._push(letter)

    def subscribe(self, buffer: int = 1000) -> DeadLetterSubscription:
        """Start receiving dead letters recorded from now on."""
        subscription = DeadLetterSubscription(self, buffer)
        self._subscribers.add(subscription)
        return subscription
