"""Cross-node dedupe claims: which node handles a message that was delivered twice.

A broker redelivers (at-least-once) and a publisher may send twice, so two nodes can receive
the same message. The first to claim its message id handles it; the others see DUPLICATE and
skip it. The claim is on the message id alone, not on where a copy was routed: the id is the
idempotency key (DESIGN §3), so the same id published to `agent.x` and to `type.echo` is one
message, handled once across the cluster, like the database's record that is looked up by
id. Copies that are meant to be handled several times (a topic's, one per subscriber) are
the caller's to leave unclaimed. Redis only saves the work: the database's record stays the
source of truth, and when Redis cannot answer the claim is UNKNOWN — the caller then asks
that record instead.

A claim is `SET key token NX PX ttl` (never the deprecated SETNX). Every claim gets its own
random token, so a retried SET whose first reply was lost is recognised as ours rather than
reported as someone else's duplicate (which would drop the message), and `release` deletes the
key only while it still holds that token (a compare-and-delete script).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from typing import NoReturn

from redis.asyncio import Redis

from mas.cluster.connection import DEFAULT_PREFIX, REDIS_ERRORS, Outage, check_prefix, ttl_ms
from mas.cluster.scripts import COMPARE_AND_DELETE

__all__ = ["Claim", "ClaimStatus", "DedupeClaims"]


class ClaimStatus(enum.Enum):
    """What Redis said about a claim."""

    CLAIMED = "claimed"
    """This caller is the first: handle the message."""
    DUPLICATE = "duplicate"
    """Another caller holds the claim: skip the message."""
    UNKNOWN = "unknown"
    """Redis did not answer: handle the message and rely on the database's unique constraint."""


@dataclass(frozen=True, slots=True)
class Claim:
    """The answer to one `claim`; pass it to `release` to give the claim up early.

    Deliberately has no truth value: `if await claims.claim(...)` would treat UNKNOWN like
    CLAIMED or DUPLICATE depending on taste, so compare `status` (or use the properties).
    """

    message_id: str
    status: ClaimStatus
    token: str | None
    """The value this caller stored in Redis (None unless CLAIMED)."""

    @property
    def claimed(self) -> bool:
        return self.status is ClaimStatus.CLAIMED

    @property
    def duplicate(self) -> bool:
        return self.status is ClaimStatus.DUPLICATE

    @property
    def unknown(self) -> bool:
        return self.status is ClaimStatus.UNKNOWN

    def __bool__(self) -> NoReturn:
        raise TypeError(
            "a Claim has no truth value: test claim.claimed / claim.duplicate / claim.unknown"
        )


class DedupeClaims:
    """`claim(message_id, ttl)`: first caller wins; never raises for an outage.

    `owner` (usually the node id) starts every token so `GET` on a claim key shows who holds
    it; uniqueness comes from the random part. Keys are `<prefix>claim:<message_id>`.

    After Redis fails to answer, claims (and releases) skip Redis for `cooldown` seconds and
    answer UNKNOWN (False) at once: a hung Redis would otherwise cost every message a full
    client timeout. One call per cooldown then probes whether Redis is back. 0 disables this.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        owner: str = "",
        cooldown: float = 1.0,
    ) -> None:
        self._client = client
        self._base = check_prefix(prefix) + "claim:"
        self._owner = owner
        self._outage = Outage("redis", "dedupe", cooldown=cooldown)
        self._release = client.register_script(COMPARE_AND_DELETE)

    def key(self, message_id: str) -> str:
        """The Redis key of the claim on `message_id`."""
        return self._base + message_id

    async def claim(self, message_id: str, ttl: float) -> Claim:
        """Claim the message for `ttl` seconds: CLAIMED, DUPLICATE, or UNKNOWN on an outage.

        Choose `ttl` longer than redeliveries can arrive apart (the broker's redelivery delay
        plus handling time); after it the claim expires and a late duplicate is caught only by
        the database. When Redis is unreachable this takes at most about two seconds (see
        `connect`), and no time at all during the cooldown after a failure.

        Raises:
            ConfigError: `ttl` is not a positive number (a caller bug, not an outage).
        """
        px = ttl_ms(ttl)
        if self._outage.skip():
            return Claim(message_id, ClaimStatus.UNKNOWN, None)
        key = self.key(message_id)
        token = f"{self._owner}/{secrets.token_hex(8)}"
        try:
            # When SET does not set, someone holds the key — or our own first SET landed, its
            # reply was lost and redis-py sent it again: only then does the key hold our token.
            if (
                await self._client.set(key, token, nx=True, px=px)
                or await self._client.get(key) == token.encode()
            ):
                status = ClaimStatus.CLAIMED
            else:
                status = ClaimStatus.DUPLICATE
        except REDIS_ERRORS as exc:
            self._outage.failed("claim", exc)
            return Claim(message_id, ClaimStatus.UNKNOWN, None)
        self._outage.ok()
        return Claim(message_id, status, token if status is ClaimStatus.CLAIMED else None)

    async def release(self, claim: Claim) -> bool:
        """Give up a CLAIMED claim so a redelivery is handled (e.g. after the handler failed).

        Deletes the key only while it still holds this claim's token: a claim that expired and
        was taken by another node is left alone. True when the key was deleted; False when
        the claim was not ours (any more), was not CLAIMED, or Redis did not answer — the key
        then simply expires with its TTL. Never raises for an outage, so it is safe in
        `finally` blocks.
        """
        if claim.token is None or self._outage.skip():
            return False
        try:
            deleted = await self._release(keys=[self.key(claim.message_id)], args=[claim.token])
        except REDIS_ERRORS as exc:
            self._outage.failed("release", exc)
            return False
        self._outage.ok()
        return bool(deleted)
