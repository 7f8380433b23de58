"""System replies: how a failure reaches the asker, on any node, as an ordinary message.

When a message that someone asked is dead-lettered, its asker gets an `mas.error` reply
naming the reason; `ask` turns it back into the typed error. Because it is a message like any
other, this works the same when the asker lives in another process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math

from mas.actors.deadletters import DeadLetter
from mas.errors import (
    AgentStopped,
    AskTimeout,
    HandlerError,
    MailboxFull,
    MasError,
    Rejected,
    UnknownAgent,
)
from mas.messages import Message

__all__ = [
    "ERROR_REPLY",
    "TASK_RESULT_REPLY",
    "AskDeadlines",
    "AskExpired",
    "PendingReply",
    "error_from_reply",
    "error_notice",
    "expire",
]

ERROR_REPLY = "mas.error"
TASK_RESULT_REPLY = "mas.task_result"


class AskExpired(Exception):
    """An ask's timer fired before its reply arrived (turned into `AskTimeout`)."""


def expire(future: asyncio.Future[Message]) -> None:
    """Timer callback of `ask`: fail the waiting future unless the reply won the race."""
    if not future.done():
        future.set_exception(AskExpired())


class PendingReply:
    """An asked question's reply, awaited apart from the sending of the question.

    `ActorSystem.question` returns it once the question is sent, so a caller may stop
    waiting for the answer (a durable handler parks, and the answer's record wakes it) without
    ever cancelling a question half-sent. Whoever holds one awaits `answer()` or calls
    `abandon()`.
    """

    __slots__ = ("_asked", "_future", "_id", "_pending", "_timeout")

    def __init__(
        self,
        pending: dict[str, asyncio.Future[Message]],
        message_id: str,
        future: asyncio.Future[Message],
        asked: str,
        timeout: float,
    ) -> None:
        self._pending = pending
        self._id = message_id
        self._future = future
        self._asked = asked
        self._timeout = timeout

    async def answer(self) -> Message:
        """The reply.

        Raises:
            AskTimeout: no reply within the ask's timeout.
            MasError: the `mas.error` reply's error (`error_from_reply`).
        """
        try:
            reply = await self._future
        except AskExpired:
            raise AskTimeout(self._asked, self._timeout) from None
        finally:
            self.abandon()
        if reply.type == ERROR_REPLY:
            raise error_from_reply(reply)
        return reply

    def abandon(self) -> None:
        """Stop waiting: a reply that comes now is dropped as late (idempotent)."""
        if self._pending.get(self._id) is self._future:
            del self._pending[self._id]
        self._future.cancel()  # a done future stays as it is; an expiry finds it done


class AskDeadlines:
    """One loop timer for every pending ask, instead of a timer per ask.

    A heap of (deadline, seq, future); the loop timer is armed for the earliest deadline.
    Answered asks are dropped lazily (from the top, and by an occasional rebuild), which
    makes an ask's timeout cost a heap push rather than a timer armed and cancelled.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, asyncio.Future[Message]]] = []
        self._seq = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def add(self, timeout: float, future: asyncio.Future[Message], pending: int) -> None:
        heap = self._heap
        while heap and heap[0][2].done():
            heapq.heappop(heap)
        if len(heap) > 2 * pending + 1024:  # answered asks stuck behind a long timeout
            heap[:] = [entry for entry in heap if not entry[2].done()]
            heapq.heapify(heap)
        deadline = self._loop.time() + timeout
        heapq.heappush(heap, (deadline, next(self._seq), future))
        if deadline < self._armed_at:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._fire)
        self._armed_at = deadline

    def _fire(self) -> None:
        self._timer, self._armed_at = None, math.inf
        now, heap = self._loop.time(), self._heap
        while heap and (heap[0][2].done() or heap[0][0] <= now):
            expire(heapq.heappop(heap)[2])
        if heap:
            self._arm(heap[0][0])

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._heap.clear()


def error_notice(letter: DeadLetter) -> Message | None:
    """The `mas.error` reply for a dead-lettered message, if anyone waits for an answer."""
    message = letter.message
    if message.reply_to is None or message.type == ERROR_REPLY:
        return None
    return Message(
        ERROR_REPLY,
        {
            "reason": letter.reason,
            "agent_id": letter.agent_id,
            "error_type": letter.error_type,
            "error": letter.error_message,
            "attempts": letter.attempts,
        },
        sender=f"agent:{letter.agent_id}" if letter.agent_id else None,
        target=message.reply_to,
        correlation_id=message.id,
        trace_id=message.trace_id,
    )


def error_from_reply(reply: Message) -> MasError:
    """The typed error an `mas.error` reply stands for."""
    payload = reply.payload
    reason = payload.get("reason")
    agent_id = str(payload.get("agent_id") or "?")
    if reason == "agent_stopped":
        return AgentStopped(agent_id)
    if reason == "mailbox_overflow":
        return MailboxFull(agent_id, None)  # the capacity is the agent's node's to know
    if reason == "unknown_address":
        return UnknownAgent(str(reply.sender or agent_id))
    if reason == "rejected":
        why = f"{payload.get('error_type') or 'Error'}: {payload.get('error') or ''}"
        return Rejected(why, agent_id=agent_id)
    return HandlerError(
        agent_id,
        str(payload.get("error_type") or "Error"),
        str(payload.get("error") or ""),
        int(payload.get("attempts") or 0),
    )
