"""A TCP proxy in front of one service, which a soak or a test breaks on purpose.

Clients (the soak's processes, an integration test's nodes) reach RabbitMQ, PostgreSQL or
Redis through the proxy's port instead of the service's, so a fault hits only them (never the
machine's service, never other suites or sessions). Modes:

- `pass`: bytes flow both ways.
- `cut()`: every open connection is reset now (RST); new ones are accepted as usual. One
  instant, like a NAT table flush or a broker closing connections.
- `refuse`: an outage. Open connections are reset and new ones are reset as soon as they are
  accepted, until `restore()`.
- `blackhole`: a partition. Connections stay open (new ones are accepted) but nothing is
  forwarded in either direction; what was sent meanwhile is held and delivered on
  `restore()`, as TCP would retransmit it after a partition shorter than its timeouts.

Everything runs in one anyio task group owned by `fault_proxy(...)`: leaving it closes the
listener and every connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import anyio
from anyio import CancelScope
from anyio.abc import SocketAttribute, SocketStream

__all__ = ["FaultProxy", "Mode", "fault_proxy"]

Mode = Literal["pass", "refuse", "blackhole"]

CONNECT_TIMEOUT = 5.0  # seconds to reach the upstream service before the client is reset
CHUNK = 65536


def _reset(stream: SocketStream) -> None:
    """Make the coming close an RST (SO_LINGER 0): the peer sees a reset, not a polite EOF."""
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
    with contextlib.suppress(OSError):  # already closed
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream connection; cancelling `scope` closes both."""

    client: SocketStream
    scope: CancelScope
    upstream: SocketStream | None = None

    def reset(self) -> None:
        _reset(self.client)
        if self.upstream is not None:
            _reset(self.upstream)
        self.scope.cancel()


@dataclass(eq=False)
class FaultProxy:
    """Forwards 127.0.0.1:`port` to `upstream`; `cut`, `refuse`, `blackhole`, `restore`."""

    name: str
    upstream: tuple[str, int]
    port: int = 0
    mode: Mode = "pass"
    accepted: int = 0  # connections accepted since the start
    refused: int = 0  # connections reset at once because the proxy refused them
    severed: int = 0  # open connections reset by cut() or refuse()
    held_chunks: int = 0  # chunks waiting for a blackhole to end
    _links: set[_Link] = field(default_factory=set)
    _restored: anyio.Event = field(default_factory=anyio.Event)

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def url(self, service_url: str) -> str:
        """`service_url` with its host and port replaced by this proxy's (the rest kept)."""
        parts = urlsplit(service_url)
        credentials, at, _ = parts.netloc.rpartition("@")
        netloc = f"{credentials}{at}127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> int:
        """Reset every open connection now; returns how many. New ones are accepted."""
        links = list(self._links)
        for link in links:
            link.reset()
        self.severed += len(links)
        return len(links)

    def refuse(self) -> int:
        """Start an outage: reset what is open and every new connection until `restore()`."""
        self._set_mode("refuse")
        return self.cut()

    def blackhole(self) -> None:
        """Start a partition: keep connections, forward nothing until `restore()`."""
        self._set_mode("blackhole")

    def restore(self) -> None:
        """Back to `pass`; data held by a blackhole flows on."""
        self._set_mode("pass")

    def _set_mode(self, mode: Mode) -> None:
        if mode == self.mode:
            return
        self.mode = mode
        if mode == "pass":
            self._restored.set()
        elif self._restored.is_set():
            self._restored = anyio.Event()

    async def _serve(self, client: SocketStream) -> None:
        async with client:
            self.accepted += 1
            if self.mode == "refuse":
                self.refused += 1
                _reset(client)
                return
            with CancelScope() as scope:
                link = _Link(client, scope)
                self._links.add(link)
                try:
                    await self._forward(link)
                finally:
                    self._links.discard(link)

    async def _forward(self, link: _Link) -> None:
        try:
            with anyio.fail_after(CONNECT_TIMEOUT):
                upstream = await anyio.connect_tcp(*self.upstream)
        except (OSError, TimeoutError):
            _reset(link.client)
            return
        link.upstream = upstream
        async with upstream, anyio.create_task_group() as pipes:
            pipes.start_soon(self._pipe, link.client, upstream, pipes.cancel_scope)
            pipes.start_soon(self._pipe, upstream, link.client, pipes.cancel_scope)

    async def _pipe(self, source: SocketStream, sink: SocketStream, both: CancelScope) -> None:
        """Copy until either side ends; then the whole link ends (no half-open links)."""
        try:
            while True:
                chunk = await source.receive(CHUNK)
                while self.mode == "blackhole":
                    self.held_chunks += 1
                    try:
                        await self._restored.wait()
                    finally:
                        self.held_chunks -= 1
                await sink.send(chunk)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        finally:
            both.cancel()


@asynccontextmanager
async def fault_proxy(
    name: str, upstream_host: str, upstream_port: int
) -> AsyncIterator[FaultProxy]:
    """A running `FaultProxy` on a free port of 127.0.0.1, closed (with its links) on exit."""
    proxy = FaultProxy(name, (upstream_host, upstream_port))
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as group:
        proxy.port = listener.extra(SocketAttribute.local_port)
        group.start_soon(listener.serve, proxy._serve, group)
        try:
            yield proxy
        finally:
            proxy.restore()  # let pipes waiting on a blackhole end with the cancellation
            group.cancel_scope.cancel()
