"""A model's sliding-window rate limit in Redis, shared by every process of a cluster (see
`mas.agents.rate_limits`, whose `SlidingWindow` this implements).

The window is a sorted set of reservations scored by Redis's own clock (`TIME`: the
processes' clocks may disagree) and a hash of their tokens, changed by one Lua script each, so
two workers never both take the last room. Both keys share a hash tag (one Redis Cluster
slot) and expire a window after their last use.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from mas.cluster.connection import connect_from_settings, key_prefix, redis_answer
from mas.config import Settings
from mas.observability.outages import Outage

__all__ = ["RESERVE", "SETTLE", "RedisWindow"]

RESERVE: Final = """
local log, tokens = KEYS[1], KEYS[2]
local window = tonumber(ARGV[1])
local max_requests, max_tokens = tonumber(ARGV[2]), tonumber(ARGV[3])
local entry, want = ARGV[4], tonumber(ARGV[5])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local gone = redis.call('ZRANGEBYSCORE', log, '-inf', now - window)
if #gone > 0 then
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
    for first = 1, #gone, 1000 do  -- unpack has a limit
        redis.call('HDEL', tokens, unpack(gone, first, math.min(first + 999, #gone)))
    end
end
local count = redis.call('ZCARD', log)
local full = max_requests >= 0 and count >= max_requests
if not full and max_tokens >= 0 and count > 0 then
    local spent = 0
    for _, value in ipairs(redis.call('HVALS', tokens)) do
        spent = spent + tonumber(value)
    end
    full = spent + want > max_tokens
end
if full then
    local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
    return tostring(math.max(tonumber(oldest[2]) + window - now, 0.001))
end
redis.call('ZADD', log, now, entry)
redis.call('HSET', tokens, entry, want)
local ttl = math.ceil(window * 1000) + 1000
redis.call('PEXPIRE', log, ttl)
redis.call('PEXPIRE', tokens, ttl)
return '0'
"""
"""Reserve a request and ARGV[5] tokens as ARGV[4] if the window has room ('0'), else the
seconds until its oldest reservation leaves it. A limit of -1 is no limit."""

SETTLE: Final = """
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
    local clock = redis.call('TIME')
    redis.call('ZADD', KEYS[1], 'XX', tonumber(clock[1]) + tonumber(clock[2]) / 1000000, ARGV[1])
    redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
    local ttl = math.ceil(tonumber(ARGV[3]) * 1000) + 1000
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
end
return 0
"""
"""Count ARGV[2] tokens for reservation ARGV[1], from now (the keys live a window ARGV[3]
longer), if it is still in the window."""


class RedisWindow:
    """The window of the model `settings.llm` names, for every process on the same Redis
    and `MAS_AMQP__PREFIX`."""

    def __init__(self, settings: Settings) -> None:
        llm = settings.llm
        self.window = llm.rate_window
        self.max_requests = -1 if llm.requests_per_window is None else llm.requests_per_window
        self.max_tokens = -1 if llm.tokens_per_window is None else llm.tokens_per_window
        model = hashlib.sha256(f"{llm.base_url}|{llm.model}".encode()).hexdigest()[:16]
        base = f"{key_prefix(settings.amqp.prefix)}llm:{{{model}}}"
        self.keys = [f"{base}:log", f"{base}:tokens"]
        self._client = connect_from_settings(settings, client_name=settings.node_id)
        self._reserve: Any = self._client.register_script(RESERVE)
        self._settle: Any = self._client.register_script(SETTLE)
        self._outage = Outage("redis", "model rate limit")

    async def reserve(self, entry: str, tokens: int) -> float:
        """See `SlidingWindow.reserve`.

        Raises:
            RedisUnavailable: Redis did not answer (a ServiceUnavailable: try later).
        """
        args = [self.window, self.max_requests, self.max_tokens, entry, tokens]
        with redis_answer(self._outage, "rate_limit_reserve", "reserve a model call"):
            wait = await self._reserve(keys=self.keys, args=args)
        return float(wait)

    async def settle(self, entry: str, tokens: int) -> None:
        with redis_answer(self._outage, "rate_limit_settle", "count a model call's tokens"):
            await self._settle(keys=self.keys, args=[entry, tokens, self.window])

    async def aclose(self) -> None:
        await self._client.aclose()
