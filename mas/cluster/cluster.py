"""`Cluster`: one Redis connection pool serving the dedupe claims and heartbeats."""

from __future__ import annotations

from types import TracebackType

from redis.asyncio import Redis

from mas.cluster.connection import (
    DEFAULT_PREFIX,
    REDIS_ERRORS,
    check_prefix,
    connect,
    connect_from_settings,
)
from mas.cluster.dedupe import DedupeClaims
from mas.cluster.heartbeats import NodeHeartbeats
from mas.config import Settings

__all__ = ["Cluster"]


class Cluster:
    """The Redis helpers of one node, sharing one client: `claims` and `heartbeats`.

    `async with Cluster.from_settings(settings, node_id=...) as cluster:` closes the client on
    exit. Nothing connects until the first command, so an unreachable Redis does not stop a
    node from starting; `ping()` tells whether it answers.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_id: str = "",
        owns_client: bool = True,
    ) -> None:
        check_prefix(prefix)
        self.client = client
        self.prefix = prefix
        self.node_id = node_id
        self.claims = DedupeClaims(client, prefix=prefix, owner=node_id)
        self.heartbeats = NodeHeartbeats(client, prefix=prefix)
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, *, prefix: str = DEFAULT_PREFIX, node_id: str = "") -> Cluster:
        """A Cluster on its own client for `url` (short timeouts; see `connect`)."""
        return cls(connect(url, client_name=node_id or None), prefix=prefix, node_id=node_id)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, prefix: str = DEFAULT_PREFIX, node_id: str = ""
    ) -> Cluster:
        """A Cluster on `MAS_REDIS_URL` (raises ConfigError when it is unset)."""
        client = connect_from_settings(settings, client_name=node_id or None)
        return cls(client, prefix=prefix, node_id=node_id)

    async def ping(self) -> bool:
        """True when Redis answers (for readiness checks); never raises for an outage."""
        try:
            return bool(await self.client.ping())
        except REDIS_ERRORS:
            return False

    async def aclose(self) -> None:
        """Close the client's connections, if this Cluster created it."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Cluster:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
