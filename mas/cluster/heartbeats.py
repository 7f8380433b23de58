"""Node heartbeats: which nodes are alive, as keys that expire unless refreshed.

Each node writes `<prefix>node:<node_id>` = a JSON object (what it runs, its address...) with
a TTL, and refreshes it every third of that TTL. A node that crashes or loses Redis stops
refreshing and its key expires: liveness needs no clean shutdown and no clock agreement.
Values are JSON only — never pickle, which would let anyone who can write to Redis run code in
every node that lists the others.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import structlog
from redis.asyncio import Redis

from mas.cluster.connection import (
    DEFAULT_PREFIX,
    Outage,
    RedisUnavailable,
    check_prefix,
    redis_answer,
    ttl_ms,
)
from mas.errors import ConfigError

__all__ = ["HeartbeatLoop", "NodeHeartbeats"]

_log = structlog.get_logger("mas.cluster")

_SCAN_BATCH = 500
_GLOB_SPECIALS = str.maketrans({c: "\\" + c for c in "*?[]\\"})

NodeInfo = Mapping[str, Any]


class NodeHeartbeats:
    """Write one node's heartbeat, list the live ones (keys `<prefix>node:<node_id>`)."""

    def __init__(self, client: Redis, *, prefix: str = DEFAULT_PREFIX) -> None:
        self._client = client
        self._base = check_prefix(prefix) + "node:"
        self._outage = Outage("redis", "heartbeats")

    def key(self, node_id: str) -> str:
        """The Redis key of `node_id`'s heartbeat."""
        return self._base + node_id

    async def beat(self, node_id: str, info: NodeInfo, ttl: float) -> None:
        """Mark `node_id` live for `ttl` seconds, publishing `info` (a JSON object).

        Raises:
            ConfigError: `node_id` is empty, `ttl` is not positive, or `info` is not
                JSON-serialisable (str keys; str, number, bool, None, list or dict values).
            RedisUnavailable: Redis did not answer.
        """
        if not node_id:
            raise ConfigError("a heartbeat needs a non-empty node id")
        px = ttl_ms(ttl)
        try:
            body = json.dumps(dict(info), separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"heartbeat info of node {node_id!r} is not JSON-serialisable: {exc}"
            ) from exc
        with redis_answer(self._outage, "beat", f"heartbeat of node {node_id!r}"):
            await self._client.set(self.key(node_id), body, px=px)

    async def live_nodes(self) -> dict[str, dict[str, Any]]:
        """Every node whose heartbeat has not expired, mapped to the info it published.

        Uses SCAN (never KEYS, which blocks Redis on a large keyspace). A value that is not a
        JSON object is skipped with a warning: something else wrote under our prefix.

        Raises:
            RedisUnavailable: Redis did not answer.
        """
        pattern = self._base.translate(_GLOB_SPECIALS) + "*"
        values: list[bytes | str | None] = []
        with redis_answer(self._outage, "live_nodes", "listing of live nodes"):
            keys = [k async for k in self._client.scan_iter(match=pattern, count=_SCAN_BATCH)]
            for start in range(0, len(keys), _SCAN_BATCH):
                values.extend(await self._client.mget(keys[start : start + _SCAN_BATCH]))
        nodes: dict[str, dict[str, Any]] = {}
        cut = len(self._base)
        for raw_key, raw in zip(keys, values, strict=True):
            if raw is None:  # expired between SCAN and MGET
                continue
            key = raw_key.decode(errors="replace") if isinstance(raw_key, bytes) else raw_key
            try:
                info = json.loads(raw)
            except ValueError:
                info = None
            if not isinstance(info, dict):
                _log.warning("heartbeat_unreadable", key=key)
                continue
            nodes[key[cut:]] = info
        return nodes

    async def remove(self, node_id: str) -> bool:
        """Delete `node_id`'s heartbeat now (a clean shutdown); True when it existed.

        Raises:
            RedisUnavailable: Redis did not answer (the key then expires with its TTL).
        """
        with redis_answer(self._outage, "remove", f"removal of node {node_id!r}"):
            deleted = await self._client.delete(self.key(node_id))
        return bool(deleted)


class HeartbeatLoop:
    """`async with HeartbeatLoop(heartbeats, node_id, info, ttl):` keeps the node live.

    Beats once on entry (so the node is listed as soon as the block starts), then every
    `interval` seconds (default `ttl / 3`, so two beats can be lost before the key expires).
    A failing beat is logged — once per run of failures, Redis outages once by
    `NodeHeartbeats` — and the loop carries on: while Redis is down the heartbeat just goes
    stale, and it is fresh again with the first beat after Redis returns. Nothing here raises
    into the block. `info` may be a callable, called before each beat, to publish changing
    data (load, agent counts). On exit the heartbeat is deleted (best effort, at most
    `ttl` seconds) unless `remove_on_exit=False`.
    """

    def __init__(
        self,
        heartbeats: NodeHeartbeats,
        node_id: str,
        info: NodeInfo | Callable[[], NodeInfo],
        ttl: float,
        *,
        interval: float | None = None,
        remove_on_exit: bool = True,
    ) -> None:
        ttl_ms(ttl)
        if not node_id:
            raise ConfigError("a heartbeat needs a non-empty node id")
        if interval is None:
            interval = ttl / 3
        if not 0 < interval < ttl:
            raise ConfigError(
                f"heartbeat interval ({interval}s) must be positive and shorter than the TTL "
                f"({ttl}s), or the node would flap between live and dead"
            )
        self.node_id = node_id
        self.ttl = ttl
        self.interval = interval
        self.beats = 0
        """Beats that reached Redis."""
        self.failures = 0
        """Beats that did not (Redis down, or `info` failed)."""
        self._heartbeats = heartbeats
        self._info = info
        self._remove_on_exit = remove_on_exit
        self._stop: anyio.Event | None = None  # made on entry: anyio needs a running loop
        self._task_group: anyio.abc.TaskGroup | None = None
        self._failing = False

    @property
    def healthy(self) -> bool:
        """True when the last beat reached Redis."""
        return self.beats > 0 and not self._failing

    async def __aenter__(self) -> HeartbeatLoop:
        if self._stop is not None:
            raise ConfigError("a HeartbeatLoop can be entered once; create a new one")
        self._stop = anyio.Event()
        await self._beat()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._run, name=f"heartbeat {self.node_id}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None and self._stop is not None
        self._stop.set()
        try:
            return await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            if self._remove_on_exit:
                await self._remove()

    async def _run(self) -> None:
        assert self._stop is not None
        next_beat = anyio.current_time() + self.interval
        while True:
            with anyio.move_on_after(max(0.0, next_beat - anyio.current_time())):
                await self._stop.wait()
            if self._stop.is_set():
                return
            # A fixed rate, not a fixed pause: a slow beat (Redis timing out) must not push
            # the next one later, since the key's TTL keeps running meanwhile.
            next_beat = max(next_beat + self.interval, anyio.current_time())
            await self._beat()

    async def _beat(self) -> None:
        try:
            info = self._info() if callable(self._info) else self._info
            await self._heartbeats.beat(self.node_id, info, self.ttl)
        except RedisUnavailable:
            self._failed()  # NodeHeartbeats logged the outage once already
        except Exception as exc:
            if not self._failing:
                _log.error("heartbeat_failed", node_id=self.node_id, error=repr(exc))
            self._failed()
        else:
            self.beats += 1
            self._failing = False

    def _failed(self) -> None:
        self.failures += 1
        self._failing = True

    async def _remove(self) -> None:
        # On an outage the key expires by itself; waiting longer than its TTL gains nothing.
        with (
            anyio.CancelScope(shield=True),
            anyio.move_on_after(self.ttl),
            contextlib.suppress(RedisUnavailable),
        ):
            await self._heartbeats.remove(self.node_id)
