"""Agents for the replay tests of every trace shape (imported by `mas replay` by name)."""

from __future__ import annotations

from mas import Agent, HandlerResult, Message
from mas.agents import ModelAgent


class Summarizer(Agent):
    """Offers `summarize`: the first words of a text."""

    type = "summarizer"
    capabilities = ("summarize",)

    async def handle_message(self, message: Message) -> HandlerResult:
        words = str(message.payload.get("text", "")).split()
        return message.reply({"summary": " ".join(words[:2])})


class Listener(Agent):
    """Subscribed to `news.*`: tells the archive what it heard (a second hop)."""

    type = "listener"
    topics = ("news.*",)

    async def handle_message(self, message: Message) -> HandlerResult:
        await self.ctx.send("agent:archive", Message("heard", {"headline": message.payload}))
        return None


class Archive(Agent):
    """The end of the chain: asks the summarizer (a third hop) and keeps nothing."""

    type = "archive"

    async def handle_message(self, message: Message) -> HandlerResult:
        text = str(message.payload.get("headline", {}).get("title", ""))
        await self.ctx.ask("capability:summarize", Message("summarize", {"text": text}), 5)
        return None


class ModelWriter(ModelAgent):
    """Offers `write`: asks the model (`MAS_LLM__*`) for a line about `payload.topic`, a
    durable model call."""

    type = "model_writer"
    capabilities = ("write",)

    async def handle_message(self, message: Message) -> HandlerResult:
        prompt = [{"role": "user", "content": f"a line about {message.payload['topic']}"}]
        answer = await self.model.complete(self.ctx, prompt)
        return message.reply({"line": answer.content.upper()})
