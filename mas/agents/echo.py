"""EchoAgent: answers every message with its payload — the smallest useful agent."""

from __future__ import annotations

from mas.actors.agent import Agent, HandlerResult
from mas.messages import Message, TaskResult

__all__ = ["EchoAgent"]


class EchoAgent(Agent):
    """Replies with the payload it received; completes the task when the message has one."""

    type = "echo"
    capabilities = ("echo",)

    async def handle_message(self, message: Message) -> HandlerResult:
        if message.task_id is not None:
            return TaskResult.succeeded(message.task_id, dict(message.payload))
        return message.reply(dict(message.payload))
