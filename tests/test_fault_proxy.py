"""The fault proxy, against a local echo server (no real service needed).

Every wait is on a condition (bytes arrived, a connection closed, a chunk held); the only
bounded waits are the overall `fail_after`s that keep a broken proxy from hanging the suite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import pytest
from anyio.abc import SocketAttribute, SocketStream

from mas.testing import eventually
from tests.fault_proxy import FaultProxy, fault_proxy

pytestmark = pytest.mark.anyio

LIMIT = 10.0  # seconds any one step may take before the test fails instead of hanging


@dataclass
class EchoServer:
    """Echoes what it receives and remembers it (to see that a blackhole forwarded nothing)."""

    port: int = 0
    received: bytearray = field(default_factory=bytearray)
    connections: int = 0

    async def serve(self, stream: SocketStream) -> None:
        self.connections += 1
        async with stream:
            try:
                while True:
                    data = await stream.receive()
                    self.received += data
                    await stream.send(data)
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as group:
        server.port = listener.extra(SocketAttribute.local_port)
        group.start_soon(listener.serve, server.serve, group)
        yield server
        group.cancel_scope.cancel()


@pytest.fixture
async def proxy(echo: EchoServer) -> AsyncIterator[FaultProxy]:
    async with fault_proxy("echo", "127.0.0.1", echo.port) as running:
        yield running


async def connect(proxy: FaultProxy) -> SocketStream:
    return await anyio.connect_tcp("127.0.0.1", proxy.port)


async def round_trip(stream: SocketStream, data: bytes) -> bytes:
    with anyio.fail_after(LIMIT):
        await stream.send(data)
        received = b""
        while len(received) < len(data):
            received += await stream.receive()
        return received


async def closed_by_peer(stream: SocketStream) -> bool:
    """Whether the next receive says the peer closed or reset the connection."""
    with anyio.fail_after(LIMIT):
        try:
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            return True
    return False


async def test_passes_bytes_both_ways(proxy: FaultProxy) -> None:
    async with await connect(proxy) as stream:
        assert await round_trip(stream, b"hello") == b"hello"
    assert proxy.accepted == 1


async def test_cut_resets_open_connections_and_accepts_new_ones(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    async with await connect(proxy) as first, await connect(proxy) as second:
        await round_trip(first, b"a")
        await round_trip(second, b"b")
        assert proxy.cut() == 2
        assert await closed_by_peer(first)
        assert await closed_by_peer(second)
    await eventually(lambda: proxy.open_connections == 0, LIMIT)
    async with await connect(proxy) as third:
        assert await round_trip(third, b"again") == b"again"
    assert (proxy.severed, proxy.mode) == (2, "pass")


async def test_refuse_is_an_outage_until_restored(proxy: FaultProxy, echo: EchoServer) -> None:
    async with await connect(proxy) as before:
        await round_trip(before, b"x")
        assert proxy.refuse() == 1
        assert await closed_by_peer(before)
    async with await connect(proxy) as during:
        assert await closed_by_peer(during)
    assert proxy.refused == 1
    assert echo.connections == 1, "a refused connection reached the service"
    proxy.restore()
    async with await connect(proxy) as after:
        assert await round_trip(after, b"back") == b"back"


async def test_blackhole_holds_everything_until_restored(
    proxy: FaultProxy, echo: EchoServer
) -> None:
    async with await connect(proxy) as stream:
        await round_trip(stream, b"warm")
        proxy.blackhole()
        await stream.send(b"held")
        await eventually(lambda: proxy.held_chunks == 1, LIMIT)
        assert bytes(echo.received) == b"warm", "the blackhole forwarded bytes"
        # A connection opened during the partition is accepted and silent too.
        async with await connect(proxy) as late:
            await late.send(b"late")
            await eventually(lambda: proxy.held_chunks == 2, LIMIT)
            proxy.restore()
            with anyio.fail_after(LIMIT):
                assert await late.receive() == b"late"
        with anyio.fail_after(LIMIT):
            assert await stream.receive() == b"held"
    assert proxy.held_chunks == 0


async def test_cut_during_a_blackhole_ends_the_held_links(proxy: FaultProxy) -> None:
    async with await connect(proxy) as stream:
        await round_trip(stream, b"warm")
        proxy.blackhole()
        await stream.send(b"held")
        await eventually(lambda: proxy.held_chunks == 1, LIMIT)
        assert proxy.cut() == 1
        assert await closed_by_peer(stream)
    await eventually(lambda: proxy.held_chunks == 0 and proxy.open_connections == 0, LIMIT)


async def test_an_unreachable_service_resets_the_client() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    async with fault_proxy("nowhere", "127.0.0.1", port) as proxy:
        async with await connect(proxy) as stream:
            assert await closed_by_peer(stream)
        assert proxy.open_connections == 0


async def test_leaving_the_proxy_closes_its_connections(echo: EchoServer) -> None:
    async with fault_proxy("echo", "127.0.0.1", echo.port) as proxy:
        stream = await connect(proxy)
        await round_trip(stream, b"x")
        proxy.blackhole()  # even links waiting on a partition end
        await stream.send(b"y")
        await eventually(lambda: proxy.held_chunks == 1, LIMIT)
    async with stream:
        assert await closed_by_peer(stream)
    with pytest.raises(OSError, match="connection attempts failed"):  # nothing listens
        await anyio.connect_tcp("127.0.0.1", proxy.port)


def test_url_points_at_the_proxy_and_keeps_the_rest() -> None:
    proxy = FaultProxy("pg", ("127.0.0.1", 5432), port=40001)
    assert proxy.url("postgresql+asyncpg://postgres@127.0.0.1:5432/test") == (
        "postgresql+asyncpg://postgres@127.0.0.1:40001/test"
    )
    assert proxy.url("amqp://guest:guest@localhost/vh?x=1") == (
        "amqp://guest:guest@127.0.0.1:40001/vh?x=1"
    )
    assert proxy.url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:40001/0"
