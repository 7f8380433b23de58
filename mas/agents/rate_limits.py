"""One rate limit per model, shared by every agent that calls it: in a process, or through
Redis by every process of a cluster.

A model server's limits are per window (requests and tokens per minute); what it does past
them is answer 429, which costs a round trip and, from N workers retrying, makes the storm
worse. So a call waits for room *before* it is made: `ModelLimits.wait_for_room` reserves a
request and the tokens the call may spend (its prompt's length over 3, plus what it may answer:
`max_tokens` or `MAS_LLM__ANSWER_TOKENS`) in a sliding log of the last `MAS_LLM__RATE_WINDOW`
seconds, and once the answer came, `settle` replaces the estimate with the tokens the server
counted and restarts the call's window then (the server counted it on arrival, somewhere
between the two). N workers together stay under the limit in every window, not only on average.

Why not the `limits` library: its moving window keeps one entry per unit of cost (a limit of
100k tokens a minute would be 100k list entries), and its sliding-window counter is an
estimate that can let more through than the limit.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from mas.errors import ServiceUnavailable

if TYPE_CHECKING:
    from mas.config import LLMSettings, Settings

__all__ = ["MemoryWindow", "ModelLimits", "SlidingWindow", "limits_for"]


class SlidingWindow(Protocol):
    """A log of reservations (a request and its tokens) over the last `window` seconds."""

    async def reserve(self, entry: str, tokens: int) -> float:
        """Log `entry` with `tokens` if the window has room for one more request and them
        (0.0), else log nothing and return the seconds until the oldest entry leaves.
        A request bigger than the token limit gets in alone, into an empty window."""
        ...

    async def settle(self, entry: str, tokens: int) -> None:
        """Count `tokens` for `entry` instead of its reservation, and from now: the server
        counted the call when it arrived, some time after the reservation and before now,
        so holding its place a window from now keeps every server-side window within the
        limit (while it is in the window; one that left it is not brought back)."""
        ...

    async def aclose(self) -> None:
        """Let go of what the window holds (a connection)."""
        ...


class MemoryWindow:
    """The sliding window of one process (an asyncio loop: no lock needed, nothing awaits
    inside a reservation). Its size is bounded by the calls of one window."""

    def __init__(self, window: float, max_requests: int | None, max_tokens: int | None) -> None:
        self.window = window
        self.max_requests = max_requests
        self.max_tokens = max_tokens
        self._entries: dict[str, tuple[float, int]] = {}  # entry: (since, tokens)

    async def reserve(self, entry: str, tokens: int) -> float:
        now = time.monotonic()
        entries = self._entries
        for gone in [e for e, (since, _) in entries.items() if since <= now - self.window]:
            del entries[gone]
        full = self.max_requests is not None and len(entries) >= self.max_requests
        if not full and self.max_tokens is not None and entries:
            full = sum(spent for _, spent in entries.values()) + tokens > self.max_tokens
        if full:
            oldest = min(since for since, _ in entries.values())
            return max(oldest + self.window - now, 0.001)
        entries[entry] = (now, tokens)
        return 0.0

    async def settle(self, entry: str, tokens: int) -> None:
        if entry in self._entries:
            self._entries[entry] = (time.monotonic(), tokens)

    async def aclose(self) -> None:
        return None  # shared by the process's callers of the model


class ModelLimits:
    """The limits of one model (`MAS_LLM__REQUESTS_PER_WINDOW`, `TOKENS_PER_WINDOW`)."""

    def __init__(self, window: SlidingWindow, settings: LLMSettings) -> None:
        self.window = window
        self.settings = settings

    def estimate(self, messages: list[dict[str, str]], options: dict[str, Any]) -> int:
        """The tokens a call may spend, at most: its prompt (a token is 3 characters or
        more) and the longest answer it allows."""
        prompt = len(json.dumps(messages, ensure_ascii=False)) // 3 + 1
        answer = options.get("max_tokens") or options.get("max_completion_tokens")
        return prompt + (answer if type(answer) is int else self.settings.answer_tokens)

    async def wait_for_room(self, tokens: int) -> str:
        """Reserve a call spending up to `tokens`; returns the reservation's id.

        Waits while the window is full, at most `MAS_LLM__TIMEOUT` in all.

        Raises:
            ServiceUnavailable: no room within that time (`retry_after`: when there may be),
                or the shared window (Redis) does not answer.
        """
        entry = uuid.uuid4().hex
        deadline = time.monotonic() + self.settings.timeout
        while (wait := await self.window.reserve(entry, tokens)) > 0:
            left = deadline - time.monotonic()
            if wait > left:
                raise ServiceUnavailable(
                    f"model {self.settings.model!r}: its rate limit leaves no room for "
                    f"{self.settings.timeout:g} s",
                    retry_after=wait,
                )
            await asyncio.sleep(wait)
        return entry

    async def settle(self, entry: str, tokens: int) -> None:
        await self.window.settle(entry, tokens)

    async def aclose(self) -> None:
        await self.window.aclose()


_local: dict[tuple[Any, ...], MemoryWindow] = {}


def limits_for(settings: Settings) -> ModelLimits | None:
    """The limits of the model `settings.llm` names, shared by every caller in this process
    (one window per model), or through Redis by the whole cluster when `MAS_REDIS_URL` is
    set (`aclose` them: a connection); None when no limit is set."""
    llm = settings.llm
    if llm.requests_per_window is None and llm.tokens_per_window is None:
        return None
    key = (llm.base_url, llm.model, llm.rate_window, llm.requests_per_window, llm.tokens_per_window)
    if settings.redis_url is not None:
        from mas.cluster.rate_limits import RedisWindow

        return ModelLimits(RedisWindow(settings), llm)
    window = _local.get(key)
    if window is None:
        window = _local[key] = MemoryWindow(
            llm.rate_window, llm.requests_per_window, llm.tokens_per_window
        )
    return ModelLimits(window, llm)
