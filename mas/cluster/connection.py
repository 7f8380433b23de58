"""The Redis client every cluster helper shares, and how they treat an outage.

Redis is an accelerator in mas, never the source of truth (DESIGN §6): the database's unique
constraints decide when Redis is down or has evicted a key. So the client is built to fail
fast — short connect and read timeouts and one quick retry — because a caller waiting on a dead
Redis is worse than a caller that falls back to the database at once.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Final

import structlog
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from mas.config import Settings, masked_url
from mas.errors import ConfigError, RedisUnavailable
from mas.observability.outages import Outage

__all__ = [
    "DEFAULT_PREFIX",
    "REDIS_ERRORS",
    "Outage",
    "RedisUnavailable",
    "check_prefix",
    "connect",
    "connect_from_settings",
    "key_prefix",
    "redis_answer",
    "ttl_ms",
]

DEFAULT_PREFIX: Final = "mas:"


def key_prefix(name_prefix: str) -> str:
    """The Redis key prefix of the nodes sharing `MAS_AMQP__PREFIX` = `name_prefix`."""
    return DEFAULT_PREFIX + name_prefix


# What an unreachable, overloaded or refusing Redis raises. Everything a Redis server or the
# network can do wrong is a RedisError or an OSError; our own bugs (TypeError...) are neither
# and still propagate.
REDIS_ERRORS: Final = (RedisError, OSError)


@contextlib.contextmanager
def redis_answer(outage: Outage, operation: str, asked: str) -> Iterator[None]:
    """The one place where redis-py's errors become `RedisUnavailable` (and count in `outage`).

    For the helpers whose caller must decide what "don't know" means; those that answer
    "unknown" themselves (a dedupe claim, a release) catch `REDIS_ERRORS` and log the same way.
    `operation` names the call in the outage's log line, `asked` in the error's message.

    Raises:
        RedisUnavailable: Redis did not answer; the driver's error is its `__cause__`.
    """
    try:
        yield
    except REDIS_ERRORS as exc:
        outage.failed(operation, exc)
        raise RedisUnavailable(asked, exc) from exc
    outage.ok()


_log = structlog.get_logger("mas.cluster")


def connect(
    url: str | SecretStr,
    *,
    connect_timeout: float = 1.0,
    timeout: float = 1.0,
    retries: int = 1,
    client_name: str | None = None,
) -> Redis:
    """A `redis.asyncio` client for `url` that gives up within a few seconds.

    Worst case for one command is about `(retries + 1) * (connect_timeout + timeout)`; the
    defaults keep it near 2 s. redis-py's own default (3 retries with a backoff of up to
    seconds) would make a dead Redis stall the message hot path. Connecting is lazy: no
    network traffic happens here, only the URL is checked. `client_name` (e.g. the node id)
    shows in `CLIENT LIST`.

    Raises:
        ConfigError: the URL is not a redis://, rediss:// or unix:// URL, or a timeout is not
            positive.
    """
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    if connect_timeout <= 0 or timeout <= 0:
        raise ConfigError(
            f"Redis timeouts must be positive (connect_timeout={connect_timeout}, "
            f"timeout={timeout})"
        )
    if retries < 0:
        raise ConfigError(f"Redis retries must be 0 or more, not {retries}")
    try:
        return Redis.from_url(
            raw,
            socket_connect_timeout=connect_timeout,
            socket_timeout=timeout,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.02), retries),
            client_name=_client_name(client_name),
        )
    except ValueError as exc:
        raise ConfigError(
            f"cannot use Redis URL {masked_url(raw)!r}: {exc}; expected redis://host:port/db, "
            "rediss://... or unix://..."
        ) from exc


def connect_from_settings(settings: Settings, *, client_name: str | None = None) -> Redis:
    """The client `MAS_REDIS_URL` names (see `connect` for the timeouts).

    Raises:
        ConfigError: `MAS_REDIS_URL` is not set, or is not a Redis URL.
    """
    if settings.redis_url is None:
        raise ConfigError(
            "Redis is not configured: set MAS_REDIS_URL (e.g. redis://127.0.0.1:6379/0)"
        )
    return connect(settings.redis_url, client_name=client_name)


def check_prefix(prefix: str) -> str:
    """`prefix` if it can start Redis keys: a string (empty allowed, though unwise)."""
    if not isinstance(prefix, str):
        raise ConfigError(f"a Redis key prefix must be a string, not {type(prefix).__name__}")
    return prefix


def ttl_ms(ttl: float) -> int:
    """`ttl` seconds as the whole milliseconds `PX` takes, rounded up so it never becomes 0.

    Raises:
        ConfigError: `ttl` is not a positive finite number of seconds.
    """
    if not isinstance(ttl, int | float) or not math.isfinite(ttl) or ttl <= 0:
        raise ConfigError(f"a TTL must be a positive number of seconds, not {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


def _client_name(name: str | None) -> str | None:
    """`name` as Redis accepts it in CLIENT SETNAME (printable ASCII, no spaces).

    Redis refuses other characters, and that refusal would fail every connection — an
    outage caused by a node's name.
    """
    if not name:
        return None
    return "".join(c if "!" <= c <= "~" else "_" for c in name)
