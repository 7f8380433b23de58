"""Agents that call a model (`MAS_LLM__*`), for the tests of model calls, budgets and rate
limits; `mas worker` processes import them by name (`tests.model_agents:Writer`)."""

from __future__ import annotations

import asyncio

from mas import HandlerResult, Message
from mas.agents import ModelAgent

__all__ = ["Drafter", "Writer"]


class Drafter(ModelAgent):
    """Asks the model for a line about `payload.topic` (default: tides): one durable call."""

    type = "drafter"

    async def handle_message(self, message: Message) -> HandlerResult:
        topic = message.payload.get("topic", "tides")
        answer = await self.model.complete(self.ctx, [{"role": "user", "content": topic}])
        return message.reply({"draft": answer.content})


class Writer(ModelAgent):
    """Offers `write`: waits `payload.pause` seconds (its I/O), then makes `payload.calls`
    model calls one after another, each a durable step."""

    type = "writer"
    capabilities = ("write",)

    async def handle_message(self, message: Message) -> HandlerResult:
        await asyncio.sleep(float(message.payload.get("pause", 0)))
        for n in range(int(message.payload["calls"])):
            prompt = [{"role": "user", "content": f"part {n}"}]
            await self.model.complete(self.ctx, prompt, step=f"part-{n}")
        return message.reply({"parts": message.payload["calls"]})  # a task's result too
