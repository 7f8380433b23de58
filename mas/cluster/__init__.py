"""Redis helpers for distributed mode: dedupe claims and node heartbeats.

Redis speeds things up and spreads knowledge between nodes; it is never the source of truth
(DESIGN §6). When it is down or evicts keys, the database's unique constraints and fencing
checks still decide, so every helper here fails fast and says "unknown" rather than hanging or
guessing. Needs the `redis` extra; `import mas` does not load this package.

    async with Cluster.from_settings(settings, node_id="node-1") as cluster:
        claim = await cluster.claims.claim(message.id, ttl=300)
        if claim.duplicate:
            ...  # another node handles it
        async with HeartbeatLoop(cluster.heartbeats, "node-1", {"agents": 3}, ttl=15):
            ...
"""

from __future__ import annotations

from mas.cluster.cluster import Cluster
from mas.cluster.connection import (
    DEFAULT_PREFIX,
    RedisUnavailable,
    connect,
    connect_from_settings,
    key_prefix,
)
from mas.cluster.dedupe import Claim, ClaimStatus, DedupeClaims
from mas.cluster.heartbeats import HeartbeatLoop, NodeHeartbeats

__all__ = [
    "DEFAULT_PREFIX",
    "Claim",
    "ClaimStatus",
    "Cluster",
    "DedupeClaims",
    "HeartbeatLoop",
    "NodeHeartbeats",
    "RedisUnavailable",
    "connect",
    "connect_from_settings",
    "key_prefix",
]
