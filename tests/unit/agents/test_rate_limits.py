"""A model's rate limit (`mas.agents.rate_limits`): callers wait for room instead of being
answered 429, and together stay within the limit in every window, as the model server counts
(a real chat-completions server started by each test)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from mas import Message
from mas.agents.llm import ChatClient
from mas.agents.rate_limits import limits_for
from mas.config import AmqpSettings, Settings
from mas.testing import TestRuntime
from tests.model_agents import Drafter
from tests.redis_support import REDIS_URL, delete_keys, reachable_redis
from tests.unit.agents.model_server import ModelServer, model

__all__ = ["model"]

pytestmark = pytest.mark.anyio

PROMPT = [{"role": "user", "content": "say something about tides"}]
JITTER = 0.005  # s: Redis's clock and this process's, rounding


def most_in_a_window(times: list[float], window: float) -> int:
    """The most of `times` within any `window` seconds."""
    times = sorted(times)
    return max(
        sum(1 for later in times[i:] if later - start < window - JITTER)
        for i, start in enumerate(times)
    )


def _settings(model: ModelServer, **llm: Any) -> Settings:
    return Settings(llm=model.settings(timeout=20.0, **llm))


async def test_agents_of_one_process_share_the_models_request_limit(model: ModelServer) -> None:
    model.script = ["Tides follow the moon."]
    settings = _settings(model, requests_per_window=3, rate_window=0.6)
    async with TestRuntime(settings) as rt:
        refs = [await rt.spawn(Drafter, id=f"drafter-{n}") for n in range(4)]
        asks = [ref.ask(Message("draft", {"n": n}), timeout=20) for n in range(2) for ref in refs]
        replies = await asyncio.gather(*asks)
    assert [reply.payload["draft"] for reply in replies] == ["Tides follow the moon."] * 8
    assert model.calls == 8
    assert most_in_a_window(model.arrivals, 0.6) <= 3


async def test_tokens_are_counted_as_the_server_counted_them(model: ModelServer) -> None:
    # Each answer spends 10 + 5 tokens; a call reserves its prompt and 5 until it is known.
    model.script = ["Tides follow the moon."]
    settings = _settings(model, tokens_per_window=40, answer_tokens=5, rate_window=0.6)
    client = ChatClient(settings.llm, limits_for(settings))
    try:
        await asyncio.gather(*(client.complete(PROMPT) for _ in range(6)))
    finally:
        await client.aclose()
    assert model.calls == 6
    # 15 tokens each: at most 2 calls (30 tokens) fit in a window of 40.
    assert most_in_a_window(model.arrivals, 0.6) <= 2
    assert model.arrivals[-1] - model.arrivals[0] >= 0.6  # some did wait


async def test_a_call_that_finds_no_room_in_time_is_unavailable_saying_when(
    model: ModelServer,
) -> None:
    model.script = ["ok"]
    settings = Settings(llm=model.settings(requests_per_window=1, rate_window=30.0, timeout=0.2))
    client = ChatClient(settings.llm, limits_for(settings))
    try:
        await client.complete(PROMPT)
        with pytest.raises(Exception, match="rate limit leaves no room") as caught:
            await client.complete(PROMPT)
    finally:
        await client.aclose()
    assert caught.value.retry_after is not None and 29 < caught.value.retry_after <= 30  # type: ignore[attr-defined]
    assert model.calls == 1


@pytest.mark.integration
async def test_processes_sharing_redis_share_the_limit(model: ModelServer) -> None:
    """Three clients, each with its own Redis connection as three workers would have."""
    redis = await reachable_redis()
    prefix = f"mas-test-{uuid.uuid4().hex[:8]}."
    model.script = ["Tides follow the moon."]
    settings = Settings(
        llm=model.settings(requests_per_window=4, rate_window=0.8, timeout=20.0),
        redis_url=SecretStr(REDIS_URL),
        amqp=AmqpSettings(prefix=prefix),
    )
    clients = [ChatClient(settings.llm, limits_for(settings)) for _ in range(3)]
    try:
        await asyncio.gather(*(client.complete(PROMPT) for client in clients for _ in range(4)))
    finally:
        for client in clients:
            await client.aclose()
        await delete_keys(redis, f"mas:{prefix}")
        await redis.aclose()
    assert model.calls == 12
    assert most_in_a_window(model.arrivals, 0.8) <= 4
