"""Any agent's model calls (`mas.agents.llm.Model`) against a real chat-completions server:
an answer is a durable step (never paid for twice), a busy server is waited for as it asks
without restarting the agent, a refusal is a dead letter at once."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest
from aiohttp import web

from mas import HandlerResult, Message
from mas.actors.clock import LoopClock
from mas.agents import ModelAgent
from mas.config import RetrySettings, Settings
from mas.testing import TestRuntime
from tests.unit.agents.model_server import ModelServer, model

__all__ = ["model"]

pytestmark = pytest.mark.anyio


class Drafter(ModelAgent):
    """Drafts a text with the model; crashes once after the answer when told to."""

    type = "drafter"
    crash_after_answer: ClassVar[bool] = False
    starts: ClassVar[int] = 0

    async def start(self) -> None:
        type(self).starts += 1
        await super().start()

    async def handle_message(self, message: Message) -> HandlerResult:
        prompt = [{"role": "user", "content": message.payload["topic"]}]
        answer = await self.model.complete(self.ctx, prompt, temperature=0)
        if Drafter.crash_after_answer:
            Drafter.crash_after_answer = False
            raise RuntimeError("the worker died here (test)")
        return message.reply({"draft": answer.content, "usage": answer.usage.to_dict()})


async def _ask(model: ModelServer, retry: RetrySettings, **llm: Any) -> Any:
    Drafter.starts = 0
    settings = Settings(llm=model.settings(**llm), retry=retry)
    async with TestRuntime(settings, clock=LoopClock()) as rt:
        drafter = await rt.spawn(Drafter, id="drafter")
        async with rt.dead_letters.subscribe() as letters:
            try:
                reply = await drafter.ask(Message("draft", {"topic": "tides"}), timeout=10)
            except Exception as exc:
                return exc, await asyncio.wait_for(letters.get(), 5), rt.restarts
        return reply, None, rt.restarts


async def test_an_answer_is_recorded_and_not_paid_for_again_after_a_crash(
    model: ModelServer,
) -> None:
    model.script = ["The moon pulls the sea."]
    Drafter.crash_after_answer = True
    reply, _, _ = await _ask(model, RetrySettings(base_delay=0.0, max_delay=0.0), prompt_price=2.0)
    assert not Drafter.crash_after_answer  # it did crash after the answer
    assert model.calls == 1  # the retry took the recorded answer
    assert reply.payload["draft"] == "The moon pulls the sea."
    assert reply.payload["usage"]["prompt_tokens"] == 10
    assert reply.payload["usage"]["cost"] == pytest.approx(10 * 2.0 / 1e6)
    assert model.requests[0]["temperature"] == 0


async def test_a_busy_server_is_waited_for_as_it_asks_without_restarting_the_agent(
    model: ModelServer,
) -> None:
    def busy() -> web.Response:
        return web.json_response(
            {"error": {"message": "rate limited"}}, status=429, headers={"Retry-After": "0.3"}
        )

    model.script = [busy(), busy(), busy(), "Tides follow the moon."]
    # Two calls per handler run: the first run ends ModelUnavailable, and the message is
    # retried no sooner than the server asked (its own backoff is 0).
    reply, _, restarts = await _ask(
        model, RetrySettings(base_delay=0.0, max_delay=0.0, jitter=0.0), attempts=2
    )
    assert reply.payload["draft"] == "Tides follow the moon."
    assert model.calls == 4
    assert model.arrivals[2] - model.arrivals[1] >= 0.3
    assert Drafter.starts == 1 and restarts == 0  # a busy server is not the agent's fault


async def test_a_refusal_is_a_dead_letter_at_once_with_the_servers_reason(
    model: ModelServer,
) -> None:
    model.script = [web.json_response({"error": {"message": "invalid api key"}}, status=401)]
    error, letter, restarts = await _ask(model, RetrySettings(base_delay=0.0, max_delay=0.0))
    assert "(401): invalid api key" in str(error)  # the asker is told why
    assert (letter.reason, letter.attempts, letter.error_type) == ("rejected", 1, "ModelRefused")
    assert letter.error_message is not None and "(401): invalid api key" in letter.error_message
    assert model.calls == 1 and restarts == 0
