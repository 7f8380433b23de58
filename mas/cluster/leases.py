"""Leases with fencing tokens: one owner at a time for a named job, checked where it counts.

A lease is a Redis key with a TTL, so a crashed owner frees it by expiring. That alone cannot
make a write safe: an owner paused (GC, a slow disk, a network partition) past its TTL still
believes it owns the lease while a new owner already works. Hence fencing: every acquisition
gets a token from `INCR` on a per-name counter, strictly larger than any earlier one, and the
**database write must check it** — store the highest token seen next to the guarded row and
refuse a write that carries a smaller one, in the same statement:

    UPDATE jobs SET state = :state, fence = :token
     WHERE id = :id AND fence <= :token        -- 0 rows updated: a newer owner exists, stop

`is_current(lease)` asks Redis whether the lease is still held, a cheap early exit before
expensive work; it cannot replace the database check, because the lease can expire between
the answer and the write.

The counter key has no TTL. If Redis loses it (a restart without persistence, eviction under
`maxmemory`), tokens start again from 1 and the database rightly rejects them until they climb
past the stored value: give the counters a Redis that persists and does not evict them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from mas.cluster.connection import (
    DEFAULT_PREFIX,
    REDIS_ERRORS,
    Outage,
    check_prefix,
    redis_answer,
    ttl_ms,
)
from mas.cluster.scripts import ACQUIRE_LEASE, COMPARE_AND_DELETE, RENEW_LEASE
from mas.errors import ConfigError

__all__ = ["Lease", "Leases"]


@dataclass(frozen=True, slots=True)
class Lease:
    """A held lease: who holds `name`, with which fencing `token`, until about when.

    `expires_at` is a `time.monotonic()` deadline measured from just *before* the request was
    sent, so it errs early; Redis's own expiry decides. Stop working on the lease's behalf
    before it (leave a margin for clock drift), and carry `token` into every guarded write.
    """

    name: str
    owner: str
    token: int
    expires_at: float

    def remaining(self) -> float:
        """Seconds left before `expires_at` (negative once past)."""
        return self.expires_at - time.monotonic()

    @property
    def value(self) -> str:
        """What the lease key holds while this lease is current."""
        return f"{self.token}:{self.owner}"


class Leases:
    """Acquire, renew, check and release named leases (keys `<prefix>lease:{name}`).

    An `owner` names one holder (e.g. `"<node_id>/scheduler"`); two holders must not share
    one, because acquiring a lease you already hold returns it again (with the TTL reset)
    rather than refusing — that is what makes a retried acquire safe.

    `acquire`, `renew` and `is_current` raise `RedisUnavailable` when Redis does not answer:
    "not acquired" and "don't know" call for different actions. `release` never raises for an
    outage (the lease expires by itself), so it is safe in `finally` blocks.

    The lease key and its counter share a Redis Cluster hash slot (`{name}` is their hash tag),
    as the acquire script needs.
    """

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._prefix = check_prefix(prefix)
        self._outage = Outage("redis", "leases")
        self._acquire = client.register_script(ACQUIRE_LEASE)
        self._renew = client.register_script(RENEW_LEASE)
        self._release = client.register_script(COMPARE_AND_DELETE)

    def key(self, name: str) -> str:
        """The Redis key holding lease `name` (`<token>:<owner>` while held)."""
        return f"{self._prefix}lease:{{{name}}}"

    def counter_key(self, name: str) -> str:
        """The Redis key of lease `name`'s fencing-token counter (never expires)."""
        return f"{self._prefix}fence:{{{name}}}"

    async def acquire(self, name: str, owner: str, ttl: float) -> Lease | None:
        """Take lease `name` for `ttl` seconds; None while another owner holds it.

        Raises:
            ConfigError: `name` or `owner` is empty, or `ttl` is not positive.
            RedisUnavailable: Redis did not answer.
        """
        _check_names(name, owner)
        px = ttl_ms(ttl)
        started = time.monotonic()
        with redis_answer(self._outage, "acquire", f"acquire of lease {name!r}"):
            token = await self._acquire(
                keys=[self.key(name), self.counter_key(name)], args=[owner, px]
            )
        if token is None:
            return None
        return Lease(name, owner, int(token), started + px / 1000)

    async def renew(self, lease: Lease, ttl: float) -> Lease | None:
        """Extend `lease` to `ttl` seconds from now; None when it is no longer held by it.

        None means the lease expired (and perhaps went to another owner with a higher token):
        stop acting on it. The returned lease has the same token and a new `expires_at`.

        Raises:
            ConfigError: `ttl` is not positive.
            RedisUnavailable: Redis did not answer; keep `lease.expires_at` as the deadline.
        """
        px = ttl_ms(ttl)
        started = time.monotonic()
        with redis_answer(self._outage, "renew", f"renewal of lease {lease.name!r}"):
            renewed = await self._renew(keys=[self.key(lease.name)], args=[lease.value, px])
        if not renewed:
            return None
        return Lease(lease.name, lease.owner, lease.token, started + px / 1000)

    async def is_current(self, lease: Lease) -> bool:
        """True while Redis still holds `lease` (same owner, same token) and it has not expired.

        An early exit, not a guarantee: the lease may expire right after. The database write
        must still compare `lease.token` (see the module docstring).

        Raises:
            RedisUnavailable: Redis did not answer (treat as "not current" to be safe).
        """
        if lease.remaining() <= 0:
            return False
        with redis_answer(self._outage, "is_current", f"check of lease {lease.name!r}"):
            held = await self._client.get(self.key(lease.name))
        return held == lease.value.encode()

    async def release(self, lease: Lease) -> bool:
        """Free `lease` if it is still held by it; True when it was deleted.

        False when it had already expired or passed to another owner (their lease is left
        alone) or when Redis did not answer (it then expires with its TTL).
        """
        try:
            deleted = await self._release(keys=[self.key(lease.name)], args=[lease.value])
        except REDIS_ERRORS as exc:
            self._outage.failed("release", exc)
            return False
        self._outage.ok()
        return bool(deleted)


def _check_names(name: str, owner: str) -> None:
    if not name:
        raise ConfigError("a lease needs a non-empty name")
    if not owner:
        raise ConfigError("a lease needs a non-empty owner (e.g. the node id)")
