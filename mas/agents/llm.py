"""A client of OpenAI-compatible chat-completions servers, for agents that call a model.

What the big frameworks' users ask of a model call, and what this does: a busy or failing
server (429, 5xx, a timeout, a refused connection) is waited for as it asks (`Retry-After`,
capped) or with backoff, a bounded number of times, then reported as `ModelUnavailable` (a
service outage: worth retrying later); an answer that will not change (a 4xx: a bad request,
a wrong key, an unknown model) is `ModelRefused` at once (the caller's mistake). The key is
sent as a Bearer token and appears in no log line or error. Every answer carries its token
counts, for budgets and for the record of a durable step.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from mas.actors.agent import Agent
from mas.actors.backoff import backoff_delay
from mas.actors.budgets import budget_of
from mas.agents.rate_limits import limits_for
from mas.config import LLMSettings, Settings
from mas.errors import BudgetExceeded, ConfigError, Rejected, ServiceUnavailable

if TYPE_CHECKING:
    from mas.actors.agent import AgentContext
    from mas.agents.rate_limits import ModelLimits

__all__ = [
    "ChatClient",
    "Completion",
    "Model",
    "ModelAgent",
    "ModelRefused",
    "ModelUnavailable",
    "Usage",
    "spend",
]

_log = structlog.get_logger("mas.llm")

_BACKOFF_BASE = 0.5
_BACKOFF_MAX = 30.0


class ModelUnavailable(ServiceUnavailable):
    """The model server did not answer usefully in any attempt (busy, down, too slow).

    A handler that lets it through is retried later, no sooner than the server's last
    `Retry-After` (`retry_after`), and its agent is not restarted for it.
    """


class ModelRefused(Rejected):
    """The model server refused the request for a reason a retry will not change (a bad
    request, a wrong key, an unknown model, an answer with no message).

    A handler that lets it through has its message dead-lettered at once (reason
    `rejected`, the server's words in the error), without a retry or a restart.
    """


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a call (or several, summed) spent, and their cost at the configured prices
    (`MAS_LLM__PROMPT_PRICE`, `MAS_LLM__COMPLETION_PRICE`, per million tokens)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    cost: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.calls + other.calls,
            self.cost + other.cost,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "calls": self.calls,
            "cost": round(self.cost, 9),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            _count(data.get("prompt_tokens")),
            _count(data.get("completion_tokens")),
            _count(data.get("calls")),
            float(data.get("cost") or 0.0),
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """The model's answer: its text and what it cost."""

    content: str
    usage: Usage


class ChatClient:
    """Calls `POST {base_url}/chat/completions` (one connection pool; `aclose` it), within
    the model's rate limits when given (`limits`: every call waits for room first)."""

    def __init__(self, settings: LLMSettings, limits: ModelLimits | None = None) -> None:
        self.limits = limits
        if not settings.base_url:
            raise ConfigError("MAS_LLM__BASE_URL is not set: no model server to call")
        try:
            import httpx
        except ImportError:
            raise ConfigError("calling a model needs httpx: install mas-runtime[api]") from None
        self.settings = settings
        headers = {"Content-Type": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._httpx = httpx
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(settings.timeout),
        )

    async def aclose(self) -> None:
        """Close the connection pool, and the rate limit's connection if it has one."""
        try:
            await self._client.aclose()
        finally:
            if self.limits is not None:
                await self.limits.aclose()

    async def complete(self, messages: list[dict[str, str]], **options: Any) -> Completion:
        """The model's answer to `messages` (chat messages: role and content).

        Raises:
            ModelUnavailable: every attempt met a busy or failing server.
            ModelRefused: the server refused the request (a 4xx other than 408 and 429), or
                answered with no message.
        """
        settings, limits = self.settings, self.limits
        body = {"model": settings.model, "messages": messages, **options}
        why, asked = "no attempt", None
        for attempt in range(1, settings.attempts + 1):
            if limits is not None:
                reserved = await limits.wait_for_room(limits.estimate(messages, options))
            try:
                response = await self._client.post("/chat/completions", json=body)
            except self._httpx.TimeoutException:
                why, wait = f"no answer within {settings.timeout:g} s", None
            except self._httpx.TransportError as exc:
                why, wait = f"cannot reach the model server: {type(exc).__name__}", None
            else:
                status = response.status_code
                if status < 300:
                    completion = _completion(response, settings)
                    if limits is not None:
                        usage = completion.usage
                        try:
                            await limits.settle(
                                reserved, usage.prompt_tokens + usage.completion_tokens
                            )
                        except ServiceUnavailable as exc:  # the answer is paid for: keep it
                            _log.warning("rate_limit_not_settled", error=str(exc))
                    return completion
                if limits is not None:
                    await limits.settle(reserved, 0)  # refused or failed: no tokens spent
                if status in (408, 429) or status >= 500:
                    why, wait = f"the model server answered {status}", _retry_after(response)
                    asked = wait
                else:
                    raise ModelRefused(
                        f"the model server refused the request ({status}): {_detail(response)}"
                    )
            if attempt == settings.attempts:
                break
            if wait is None:
                wait = backoff_delay(attempt, _BACKOFF_BASE, _BACKOFF_MAX, 0.1)
            wait = min(wait, settings.retry_after_max)
            _log.warning("model_call_retry", attempt=attempt, reason=why, wait=round(wait, 3))
            await asyncio.sleep(wait)
        raise ModelUnavailable(
            f"model {settings.model!r}: {why} ({settings.attempts} attempts)",
            retry_after=None if asked is None else min(asked, settings.retry_after_max),
        )


class Model:
    """The model server an agent calls, each call a durable step of its handler.

    `await model.complete(self.ctx, messages)` records the request, the answer, its tokens
    and their cost as the step `step` (default `model`); a re-run of the handler for the same
    message (a retry, a redelivery, another node after a crash) gets the recorded answer, and
    the model is not called again. Outside a handler it just calls. A busy or failing server
    is retried by the client, then raises `ModelUnavailable` (the handler is retried later,
    the agent not restarted); a refusal raises `ModelRefused` (dead-lettered at once).

    One per agent: make it in `start()` and `aclose()` it in `stop()` (`ModelAgent` does).
    """

    def __init__(self, settings: Settings) -> None:
        """`settings`: the runtime's (`ctx.runtime.settings`): the model (`MAS_LLM__*`), and
        where its rate limit is shared (`MAS_REDIS_URL`)."""
        self.settings = settings.llm
        self._runtime_settings = settings
        self._client: ChatClient | None = None

    async def complete(
        self,
        ctx: AgentContext,
        messages: list[dict[str, str]],
        *,
        step: str = "model",
        **options: Any,
    ) -> Completion:
        """The model's answer to `messages` (`options`: more request fields, as
        `temperature`), from the record when this step already ran for this message."""
        record: dict[str, Any] = await ctx.step(step, self._call, ctx, messages, options)
        return Completion(record["content"], Usage.from_dict(record["usage"]))

    async def _call(
        self, ctx: AgentContext, messages: list[dict[str, str]], options: dict[str, Any]
    ) -> dict[str, Any]:
        if self._client is None:
            self._client = ChatClient(self.settings, limits_for(self._runtime_settings))
        await spend(ctx, None)  # nothing left of the task's budget: no call
        answer = await self._client.complete(messages, **options)
        await spend(ctx, answer.usage)
        return {
            "request": {"model": self.settings.model, "messages": messages, **options},
            "content": answer.content,
            "usage": answer.usage.to_dict(),
        }

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class ModelAgent(Agent):
    """An agent that calls the model `MAS_LLM__*` names: `self.model`, a `Model` made when
    the agent starts and closed when it stops (a subclass that overrides `start` or `stop`
    calls this class's too)."""

    model: Model

    async def start(self) -> None:
        self.model = Model(self.ctx.runtime.settings)

    async def stop(self) -> None:
        await self.model.aclose()


async def spend(ctx: AgentContext, usage: Usage | None) -> None:
    """Count `usage` for the task being handled (the gateway's tasks count what they spend),
    against its budget if it has one (None: before a call, check that something is left).
    Needs the runtime's journal (persistence); without one, nothing is counted.

    Raises:
        BudgetExceeded: the task is past its budget (it has ended `budget_exceeded`).
        MasError: the record could not be written (`StoreUnavailable`: try later).
    """
    found = budget_of(ctx.message)
    journal = ctx.runtime.journal
    if found is None or journal is None:
        return
    task_id, budget = found
    if usage is None:
        if not budget.limited:
            return  # nothing to check: spending is only counted
        spent = await journal.charge(task_id, budget, 0, 0.0)
    else:
        tokens = usage.prompt_tokens + usage.completion_tokens
        spent = await journal.charge(task_id, budget, tokens, usage.cost)
    if spent.exceeded:
        raise BudgetExceeded(
            task_id, f"{spent.tokens} tokens, a cost of {spent.cost:g}", budget.describe()
        )


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None  # absent, or an HTTP date: back off instead
    return seconds if seconds >= 0 else None


def _detail(response: Any) -> str:
    """What the server said was wrong (its `error.message`, or the start of its body)."""
    text: str = response.text
    try:
        data = response.json()
    except ValueError:
        return text[:200]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and "message" in error:
        return str(error["message"])[:200]
    return text[:200]


def _completion(response: Any, settings: LLMSettings) -> Completion:
    try:
        data = response.json()
        content = data["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ModelRefused(
            f"the model server's answer holds no message: {response.text[:200]!r}"
        ) from None
    if not isinstance(content, str):
        raise ModelRefused("the model's message has no text content")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    cost = (prompt * settings.prompt_price + completion * settings.completion_price) / 1e6
    return Completion(content, Usage(prompt, completion, 1, cost))


def _count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0
