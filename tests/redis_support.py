"""Redis for tests: the URL (MAS_TEST_REDIS_URL overrides it) and a client that must answer.

Tests use their own key prefix and delete their keys. When Redis is unreachable the test
skips, or fails under MAS_REQUIRE_SERVICES=1 (see `require_service` in tests/conftest.py).
"""

from __future__ import annotations

import os

import redis.asyncio as aioredis

from tests.conftest import require_service

__all__ = ["REDIS_URL", "delete_keys", "reachable_redis"]

REDIS_URL = os.environ.get("MAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def reachable_redis() -> aioredis.Redis:
    """A client on REDIS_URL that answered a ping (the caller closes it)."""
    client = aioredis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        await client.aclose()
        require_service("Redis", False, f"{REDIS_URL}: {exc!r}")
    return client


async def delete_keys(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key under `prefix` (a test's own)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
    if keys:
        await client.delete(*keys)
