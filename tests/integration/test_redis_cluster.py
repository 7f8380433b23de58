"""mas.cluster against a real Redis: dedupe claims, heartbeats, and outages.

Every test works under its own key prefix and deletes its keys afterwards: the Redis server
is shared with other sessions, so nothing here flushes, stops or reconfigures it. Outages are
simulated with a closed port (127.0.0.1:1) or a `FaultProxy` (tests/fault_proxy.py) that
refuses connections until the test restores it.
Timing waits on conditions with a deadline; sleeps only pace the polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest
import structlog
from pydantic import SecretStr
from redis.asyncio import Redis
from structlog.testing import capture_logs

from mas.cluster import (
    Claim,
    ClaimStatus,
    Cluster,
    DedupeClaims,
    HeartbeatLoop,
    NodeHeartbeats,
    RedisUnavailable,
    connect,
    connect_from_settings,
)
from mas.cluster.connection import REDIS_ERRORS
from mas.config import Settings
from mas.errors import ConfigError
from mas.testing import eventually
from tests.conftest import require_service
from tests.fault_proxy import FaultProxy, fault_proxy
from tests.redis_support import REDIS_URL

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

REDIS_HOST = urlsplit(REDIS_URL).hostname or "127.0.0.1"  # what the proxy test forwards to
REDIS_PORT = urlsplit(REDIS_URL).port or 6379
DEAD_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused
SHORT = 1.0  # seconds: a TTL that elapses soon, yet outlasts a stall of a loaded machine


@contextlib.contextmanager
def captured_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Every event logged in the block, whatever level an earlier test's runtime configured."""
    saved = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG))
    try:
        with capture_logs() as logs:
            yield logs
    finally:
        structlog.configure(**saved)


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    redis = connect(REDIS_URL)
    try:
        reachable, detail = bool(await redis.ping()), REDIS_URL
    except REDIS_ERRORS as exc:
        reachable, detail = False, f"{REDIS_URL}: {type(exc).__name__}: {exc}"
    if not reachable:
        await redis.aclose()
    require_service("Redis", reachable, detail)
    try:
        yield redis
    finally:
        await redis.aclose()


@pytest.fixture
async def prefix(client: Redis) -> AsyncIterator[str]:
    """A key prefix of this test alone; every key under it is deleted afterwards."""
    unique = f"mas-test:{uuid.uuid4().hex}:"
    try:
        yield unique
    finally:
        keys = [key async for key in client.scan_iter(match=unique + "*", count=500)]
        if keys:
            await client.delete(*keys)


@pytest.fixture
async def dead_client() -> AsyncIterator[Redis]:
    """A client of a Redis that is not there (needs no Redis, so never skips)."""
    redis = connect(DEAD_URL)
    try:
        yield redis
    finally:
        await redis.aclose()


# -- dedupe claims -------------------------------------------------------------------------


async def test_first_claim_wins_and_every_later_claim_is_a_duplicate(
    client: Redis, prefix: str
) -> None:
    node_a = DedupeClaims(client, prefix=prefix, owner="node-a")
    node_b = DedupeClaims(client, prefix=prefix, owner="node-b")

    first = await node_a.claim("m-1", ttl=30)
    assert first.status is ClaimStatus.CLAIMED and first.claimed
    assert first.token is not None and first.token.startswith("node-a/")
    assert (await node_b.claim("m-1", ttl=30)).status is ClaimStatus.DUPLICATE
    # A second delivery to the same node is a duplicate too.
    again = await node_a.claim("m-1", ttl=30)
    assert again.duplicate and again.token is None
    # Other messages are independent.
    assert (await node_b.claim("m-2", ttl=30)).claimed
    assert await client.pttl(node_a.key("m-1")) > 25_000


async def test_a_claim_expires_after_its_ttl(client: Redis, prefix: str) -> None:
    node_a = DedupeClaims(client, prefix=prefix, owner="node-a")
    node_b = DedupeClaims(client, prefix=prefix, owner="node-b")
    assert (await node_a.claim("m-1", ttl=SHORT)).claimed
    assert (await node_b.claim("m-1", ttl=SHORT)).duplicate

    async def b_wins() -> bool:
        return (await node_b.claim("m-1", ttl=30)).claimed

    await eventually(b_wins)


async def test_release_deletes_only_the_owners_claim(client: Redis, prefix: str) -> None:
    node_a = DedupeClaims(client, prefix=prefix, owner="node-a")
    node_b = DedupeClaims(client, prefix=prefix, owner="node-b")
    mine = await node_a.claim("m-1", ttl=30)
    theirs = await node_b.claim("m-1", ttl=30)
    assert theirs.duplicate

    assert await node_b.release(theirs) is False  # a duplicate holds nothing to release
    forged = Claim("m-1", ClaimStatus.CLAIMED, "node-b/not-the-token")
    assert await node_b.release(forged) is False
    assert (await node_b.claim("m-1", ttl=30)).duplicate  # still node-a's

    assert await node_a.release(mine) is True
    assert await node_a.release(mine) is False  # already gone
    assert (await node_b.claim("m-1", ttl=30)).claimed


async def test_a_late_release_leaves_the_next_owners_claim_alone(
    client: Redis, prefix: str
) -> None:
    node_a = DedupeClaims(client, prefix=prefix, owner="node-a")
    node_b = DedupeClaims(client, prefix=prefix, owner="node-b")
    stale = await node_a.claim("m-1", ttl=SHORT)
    assert stale.claimed

    async def b_wins() -> bool:
        return (await node_b.claim("m-1", ttl=30)).claimed

    await eventually(b_wins)
    assert await node_a.release(stale) is False
    assert (await node_a.claim("m-1", ttl=30)).duplicate


async def test_a_retried_claim_recognises_its_own_token(
    client: Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SET landed but its reply was lost, and redis-py sent it again: still CLAIMED."""
    claims = DedupeClaims(client, prefix=prefix, owner="node-a")
    monkeypatch.setattr("mas.cluster.dedupe.secrets.token_hex", lambda _n: "fixed")
    await client.set(claims.key("m-1"), "node-a/fixed", px=30_000)  # the first SET
    assert (await claims.claim("m-1", ttl=30)).claimed


async def test_claim_keys_are_the_message_id_alone(client: Redis, prefix: str) -> None:
    claims = DedupeClaims(client, prefix=prefix)
    assert claims.key("a/b") == f"{prefix}claim:a/b"
    assert claims.key("a/b") != claims.key("a:b")
    assert (await claims.claim("a/b", ttl=30)).claimed
    assert (await claims.claim("a:b", ttl=30)).claimed
    assert (await claims.claim("a/b", ttl=30)).duplicate


async def test_claim_refuses_a_ttl_that_is_not_positive(client: Redis, prefix: str) -> None:
    claims = DedupeClaims(client, prefix=prefix)
    for ttl in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="TTL"):
            await claims.claim("m-1", ttl=ttl)


async def test_a_claim_has_no_truth_value(client: Redis, prefix: str) -> None:
    """`if await claims.claim(...)` would silently mistreat UNKNOWN; it raises instead."""
    claim = await DedupeClaims(client, prefix=prefix).claim("m-1", ttl=30)
    with pytest.raises(TypeError, match="no truth value"):
        bool(claim)


# -- heartbeats ----------------------------------------------------------------------------


async def test_live_nodes_lists_fresh_heartbeats_and_drops_expired_ones(
    client: Redis, prefix: str
) -> None:
    heartbeats = NodeHeartbeats(client, prefix=prefix)
    await heartbeats.beat("node-a", {"agents": 3, "host": "a.local"}, ttl=30)
    await heartbeats.beat("node-b", {"agents": 1}, ttl=SHORT)
    assert await heartbeats.live_nodes() == {
        "node-a": {"agents": 3, "host": "a.local"},
        "node-b": {"agents": 1},
    }
    raw = await client.get(heartbeats.key("node-a"))
    assert raw == b'{"agents":3,"host":"a.local"}'  # plain JSON, nothing executable

    async def b_gone() -> bool:
        return "node-b" not in await heartbeats.live_nodes()

    await eventually(b_gone)
    assert set(await heartbeats.live_nodes()) == {"node-a"}
    assert await heartbeats.remove("node-a") is True
    assert await heartbeats.live_nodes() == {}


async def test_live_nodes_skips_values_that_are_not_json_objects(
    client: Redis, prefix: str
) -> None:
    heartbeats = NodeHeartbeats(client, prefix=prefix)
    await heartbeats.beat("node-a", {}, ttl=30)
    await client.set(heartbeats.key("pickled"), b"\x80\x04\x95\x00", px=30_000)
    await client.set(heartbeats.key("listed"), b"[1, 2]", px=30_000)
    with captured_logs() as logs:
        assert await heartbeats.live_nodes() == {"node-a": {}}
    assert sorted(e["key"] for e in logs if e["event"] == "heartbeat_unreadable") == [
        heartbeats.key("listed"),
        heartbeats.key("pickled"),
    ]


async def test_glob_characters_in_the_prefix_match_only_themselves(
    client: Redis, prefix: str
) -> None:
    starred = NodeHeartbeats(client, prefix=prefix + "a*:")
    plain = NodeHeartbeats(client, prefix=prefix + "ab:")
    await starred.beat("node-a", {}, ttl=30)
    await plain.beat("node-b", {}, ttl=30)
    assert set(await starred.live_nodes()) == {"node-a"}
    assert set(await plain.live_nodes()) == {"node-b"}


async def test_heartbeat_info_must_be_json(client: Redis, prefix: str) -> None:
    heartbeats = NodeHeartbeats(client, prefix=prefix)
    with pytest.raises(ConfigError, match="JSON"):
        await heartbeats.beat("node-a", {"when": object()}, ttl=1)
    with pytest.raises(ConfigError, match="JSON"):
        await heartbeats.beat("node-a", {"load": float("nan")}, ttl=1)
    with pytest.raises(ConfigError, match="node id"):
        await heartbeats.beat("", {}, ttl=1)
    assert await heartbeats.live_nodes() == {}


async def test_heartbeat_loop_keeps_a_node_live_past_its_ttl_and_removes_it_on_exit(
    client: Redis, prefix: str
) -> None:
    heartbeats = NodeHeartbeats(client, prefix=prefix)
    load = iter(range(1000))
    async with HeartbeatLoop(heartbeats, "node-a", lambda: {"load": next(load)}, ttl=SHORT) as loop:
        assert "node-a" in await heartbeats.live_nodes()  # listed as soon as the block starts

        async def several_ttls_passed() -> bool:
            return loop.beats >= 10  # 10 beats at ttl/3 is over three TTLs

        await eventually(several_ttls_passed)
        nodes = await heartbeats.live_nodes()
        assert nodes["node-a"]["load"] >= 9 and loop.healthy and loop.failures == 0
    assert await heartbeats.live_nodes() == {}


async def test_heartbeat_loop_survives_a_failing_info_callable(client: Redis, prefix: str) -> None:
    heartbeats = NodeHeartbeats(client, prefix=prefix)

    def broken() -> dict[str, Any]:
        raise RuntimeError("metrics unavailable")

    with captured_logs() as logs:
        async with HeartbeatLoop(heartbeats, "node-a", broken, ttl=SHORT) as loop:

            async def failed_repeatedly() -> bool:
                return loop.failures >= 3

            await eventually(failed_repeatedly)
            assert not loop.healthy
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["heartbeat_failed"]


async def test_heartbeat_loop_checks_its_timing(dead_client: Redis) -> None:
    heartbeats = NodeHeartbeats(dead_client)
    with pytest.raises(ConfigError, match="shorter than the TTL"):
        HeartbeatLoop(heartbeats, "node-a", {}, ttl=1, interval=1)
    with pytest.raises(ConfigError, match="TTL"):
        HeartbeatLoop(heartbeats, "node-a", {}, ttl=0)


# -- Redis unreachable ---------------------------------------------------------------------


async def test_an_unreachable_redis_makes_claims_unknown_quickly_and_warns_once(
    dead_client: Redis,
) -> None:
    claims = DedupeClaims(dead_client, owner="node-a")
    with captured_logs() as logs:
        started = time.monotonic()
        first = await claims.claim("m-1", ttl=30)
        assert time.monotonic() - started < 3
        assert first.status is ClaimStatus.UNKNOWN and first.unknown and first.token is None
        for n in range(5):
            assert (await claims.claim(f"m-{n}", ttl=30)).unknown
        assert await claims.release(first) is False
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"], e["component"]) for e in warnings] == [("redis_unavailable", "dedupe")]


async def test_an_unreachable_redis_raises_redis_unavailable_where_unknown_matters(
    dead_client: Redis,
) -> None:
    heartbeats = NodeHeartbeats(dead_client)
    with pytest.raises(RedisUnavailable) as caught:
        await heartbeats.beat("node-a", {}, ttl=30)
    assert isinstance(caught.value, ConnectionError) and "MAS_REDIS_URL" in str(caught.value)
    with pytest.raises(RedisUnavailable):
        await heartbeats.live_nodes()
    async with Cluster(dead_client) as cluster:
        assert await cluster.ping() is False


async def test_heartbeat_loop_keeps_running_while_redis_is_unreachable(
    dead_client: Redis,
) -> None:
    heartbeats = NodeHeartbeats(dead_client)
    with captured_logs() as logs:
        async with HeartbeatLoop(heartbeats, "node-a", {"agents": 0}, ttl=SHORT) as loop:

            async def failed_repeatedly() -> bool:
                return loop.failures >= 5

            await eventually(failed_repeatedly)
            assert loop.beats == 0 and not loop.healthy
    assert [e["event"] for e in logs if e["log_level"] in ("warning", "error")] == [
        "redis_unavailable"
    ]


class SilentServer:
    """Accepts connections and never answers: a hung Redis, not a refused one."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._release = asyncio.Event()

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._release.set()
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._release.wait()
        writer.transport.abort()


async def test_a_hung_redis_costs_one_timeout_then_claims_answer_at_once() -> None:
    """Without the cooldown every message would wait the client timeout on a hung Redis."""
    async with SilentServer() as server:
        hung = connect(f"redis://127.0.0.1:{server.port}/0", connect_timeout=0.2, timeout=0.2)
        try:
            claims = DedupeClaims(hung, cooldown=30)
            started = time.monotonic()
            assert (await claims.claim("m-1", ttl=30)).unknown
            assert 0.2 <= time.monotonic() - started < 3  # the read timed out (and one retry)

            asked: list[str] = []
            real_set = hung.set

            async def counting_set(name: str, *args: Any, **kwargs: Any) -> Any:
                asked.append(name)
                return await real_set(name, *args, **kwargs)

            hung.set = counting_set  # type: ignore[method-assign]
            started = time.monotonic()
            for n in range(100):
                assert (await claims.claim(f"m-{n}", ttl=30)).unknown
            assert asked == []  # none of them went to Redis: no timeout was waited
            assert time.monotonic() - started < 1.0  # a timeout each would take 20 s
        finally:
            await hung.aclose()


async def test_after_the_cooldown_one_claim_probes_redis_again(
    dead_client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real_set = dead_client.set

    async def counting_set(name: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(name)
        return await real_set(name, *args, **kwargs)

    monkeypatch.setattr(dead_client, "set", counting_set)
    claims = DedupeClaims(dead_client, cooldown=0.1)
    assert (await claims.claim("m-1", ttl=30)).unknown
    assert (await claims.claim("m-2", ttl=30)).unknown
    assert len(asked) == 1  # the second claim did not ask Redis
    await anyio.sleep(0.15)  # the cooldown is the behaviour under test: let it run out
    with captured_logs() as logs:
        assert (await claims.claim("m-3", ttl=30)).unknown
    assert len(asked) == 2  # probed again...
    assert logs == []  # ...and it is the same outage: no second warning
    with pytest.raises(ConfigError, match="cooldown"):
        DedupeClaims(dead_client, cooldown=-1)


@pytest.fixture
async def proxy() -> AsyncIterator[FaultProxy]:
    async with fault_proxy("redis", REDIS_HOST, REDIS_PORT) as running:
        yield running


async def test_claims_and_heartbeats_recover_when_redis_comes_back(
    client: Redis, prefix: str, proxy: FaultProxy
) -> None:
    proxied = connect(proxy.url(REDIS_URL))
    claims = DedupeClaims(proxied, prefix=prefix, owner="node-a")
    watcher = NodeHeartbeats(client, prefix=prefix)  # sees Redis directly, not via the proxy
    try:
        with captured_logs() as logs:
            async with HeartbeatLoop(
                NodeHeartbeats(proxied, prefix=prefix), "node-a", {}, ttl=SHORT
            ) as loop:
                assert (await claims.claim("m-1", ttl=30)).claimed
                assert "node-a" in await watcher.live_nodes()

                proxy.refuse()  # open connections reset, new ones reset once accepted
                assert (await claims.claim("m-2", ttl=30)).unknown

                async def heartbeat_stale() -> bool:
                    return "node-a" not in await watcher.live_nodes()

                await eventually(heartbeat_stale)
                assert not loop.healthy

                proxy.restore()

                async def claimed_again() -> bool:  # UNKNOWN until the cooldown has passed
                    return (await claims.claim("m-2", ttl=30)).claimed

                await eventually(claimed_again)
                assert (await claims.claim("m-1", ttl=30)).duplicate

                async def heartbeat_fresh() -> bool:
                    return "node-a" in await watcher.live_nodes()

                await eventually(heartbeat_fresh)
                assert loop.healthy
        events = [(e["event"], e.get("component")) for e in logs]
        assert events.count(("redis_unavailable", "dedupe")) == 1
        assert events.count(("redis_recovered", "dedupe")) == 1
        assert events.count(("redis_unavailable", "heartbeats")) == 1
    finally:
        await proxied.aclose()


# -- connecting ----------------------------------------------------------------------------


async def test_a_node_name_redis_would_refuse_still_connects(client: Redis) -> None:
    named = connect(REDIS_URL, client_name="node a\u00e9")
    try:
        assert await named.client_getname() == "node_a_"
    finally:
        await named.aclose()


def test_connect_refuses_a_url_that_is_not_redis_and_masks_its_password() -> None:
    with pytest.raises(ConfigError) as caught:
        connect("http://user:hunter2@example.com/")
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)
    with pytest.raises(ConfigError, match="timeouts"):
        connect(REDIS_URL, timeout=0)


async def test_connect_from_settings_needs_redis_url() -> None:
    with pytest.raises(ConfigError, match="MAS_REDIS_URL"):
        connect_from_settings(Settings(redis_url=None))
    client = connect_from_settings(Settings(redis_url=SecretStr(REDIS_URL)))
    assert isinstance(client, Redis)
    await client.aclose()


async def test_cluster_shares_one_client_and_closes_it(client: Redis, prefix: str) -> None:
    closed: list[bool] = []
    async with Cluster.from_url(REDIS_URL, prefix=prefix, node_id="node-a") as cluster:
        helpers = (cluster.claims, cluster.heartbeats)
        assert all(helper._client is cluster.client for helper in helpers)  # one client
        real_aclose = cluster.client.aclose

        async def spy_aclose(*args: Any, **kwargs: Any) -> None:
            closed.append(True)
            await real_aclose(*args, **kwargs)

        cluster.client.aclose = spy_aclose  # type: ignore[method-assign]
        assert await cluster.ping() is True
        assert (await cluster.client.client_getname()) == "node-a"
        claim = await cluster.claims.claim("m-1", ttl=30)
        assert claim.claimed and claim.token is not None and claim.token.startswith("node-a/")
        await cluster.heartbeats.beat("node-a", {"ok": True}, ttl=30)
        assert await cluster.heartbeats.live_nodes() == {"node-a": {"ok": True}}
    assert closed == [True]  # leaving the block closed the client it made
