"""System replies: how a failure reaches the asker, on any node, as an ordinary message.

When a message that someone asked is dead-lettered, its asker gets an `mas.error` reply
naming the reason; `ask` turns it back into the typed error. Because it is a message like any
other, this works the same when the asker lives in another process.
"""

from __future__ import annotations

import asyncio

from mas.actors.deadletters import DeadLetter
from mas.errors import AgentStopped, HandlerError, MailboxFull, MasError, UnknownAgent
from mas.messages import Message

__all__ = [
    "ERROR_REPLY",
    "TASK_RESULT_REPLY",
    "AskExpired",
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
        return MailboxFull(agent_id, 0)
    if reason == "unknown_address":
        return UnknownAgent(str(reply.sender or agent_id))
    return HandlerError(
        agent_id,
        str(payload.get("error_type") or "Error"),
        str(payload.get("error") or ""),
        int(payload.get("attempts") or 0),
    )
