"""RabbitMQ fixtures shared by the conformance, integration and end-to-end tests.

A test session gets its own vhost `mas-test-<hex>` (made with `rabbitmqctl`; at the end its
queues are deleted one by one, then the empty vhost: see `_delete_vhost`) when `rabbitmqctl`
can reach the broker; otherwise it uses the URL's vhost as it is. Every test also gets its own
name prefix, and deletes the queues and exchanges it declared, so tests never see each other's
messages. When RabbitMQ is unreachable the test skips — or fails under
MAS_REQUIRE_SERVICES=1 (see `require_service` in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError
from pamqp import commands, frame, header
from pamqp.body import ContentBody
from pamqp.exceptions import UnmarshalingException
from yarl import URL

from mas.config import AmqpSettings
from mas.transports.amqp import AmqpTransport
from tests.conftest import require_service

__all__ = [
    "AMQP_URL",
    "AmqpScope",
    "amqp_scope",
    "amqp_vhost_url",
    "consumer_prefetch",
    "delete_topology",
    "listed_ready_messages",
    "publish_bare",
    "queue_depth",
    "take_dead_letters",
]

AMQP_URL = os.environ.get("MAS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

EXCHANGES = ("agents.direct", "agents.topic", "agents.delay", "agents.dlx")


def _rabbitmqctl(*args: str) -> str | None:
    """`rabbitmqctl`'s output, or None when it failed (or is not for this broker)."""
    if shutil.which("rabbitmqctl") is None or AMQP_URL != "amqp://guest:guest@127.0.0.1:5672/":
        return None
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=False)
    return done.stdout.decode() if done.returncode == 0 else None


def _delete_vhost(vhost: str, url: str) -> None:
    """Empty the session's vhost queue by queue, then delete it.

    Deleting a vhost that still held quorum queues wedged RabbitMQ 3.10 here (DESIGN §9:
    every handshake and `rabbitmqctl` call hung after it), so the queues go one by one over
    AMQP first, as the tests delete their own, and the vhost is deleted empty.
    """
    listed = _rabbitmqctl("list_queues", "-p", vhost, "name", "--quiet", "--no-table-headers")
    queues = [name for name in (listed or "").splitlines() if name.strip()]
    if queues:
        asyncio.run(delete_topology(url, "", queues))
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def amqp_vhost_url() -> Iterator[str]:
    """The session's broker URL: a private vhost when rabbitmqctl is at hand."""
    vhost = f"mas-test-{uuid.uuid4().hex[:8]}"
    if _rabbitmqctl("add_vhost", vhost) is None:
        yield AMQP_URL
        return
    url = AMQP_URL.rstrip("/") + "/" + quote(vhost, safe="")
    try:
        if _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*") is not None:
            yield url
        else:
            yield AMQP_URL
    finally:
        _delete_vhost(vhost, url)


@dataclass
class AmqpScope:
    """One test's slice of the broker: a URL, a name prefix, and what to delete afterwards."""

    url: str
    prefix: str
    transports: list[AmqpTransport] = field(default_factory=list)
    extra_queues: set[str] = field(default_factory=set)

    def settings(self, **overrides: object) -> AmqpSettings:
        return AmqpSettings(prefix=self.prefix, **overrides)  # type: ignore[arg-type]

    def transport(self, **overrides: object) -> AmqpTransport:
        transport = AmqpTransport(self.url, self.settings(**overrides), max_bytes=1_048_576)
        self.transports.append(transport)
        return transport

    def queue_names(self) -> set[str]:
        names = set(self.extra_queues)
        for transport in self.transports:
            names |= transport.declared_queues
        return names


async def _reachable(url: str) -> tuple[bool, str]:
    try:
        connection = await aio_pika.connect(url, timeout=3)
    except (OSError, TimeoutError, AMQPError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    await connection.close()
    return True, ""


async def delete_topology(url: str, prefix: str, queues: Iterable[str]) -> None:
    """Delete a prefix's exchanges and the given queues (quorum ones need if_unused=False)."""
    connection = await aio_pika.connect(url, timeout=5)
    async with connection:
        for name in sorted(set(queues)):
            channel = await connection.channel()
            try:
                await channel.queue_delete(name, if_unused=False, if_empty=False)
            except AMQPError:
                pass  # already gone (an exclusive queue dies with its connection)
            finally:
                if not channel.is_closed:
                    await channel.close()
        for name in EXCHANGES:
            channel = await connection.channel()
            try:
                await channel.exchange_delete(prefix + name)
            except AMQPError:
                pass
            finally:
                if not channel.is_closed:
                    await channel.close()


@pytest.fixture
async def amqp_scope(amqp_vhost_url: str) -> AsyncIterator[AmqpScope]:
    reachable, detail = await _reachable(amqp_vhost_url)
    require_service("RabbitMQ", reachable, f"{amqp_vhost_url.split('@')[-1]}: {detail}")
    scope = AmqpScope(amqp_vhost_url, f"t{uuid.uuid4().hex[:8]}.")
    yield scope
    await delete_topology(scope.url, scope.prefix, scope.queue_names())


async def queue_depth(connection: AbstractConnection, name: str) -> int:
    """Messages ready in a queue (a passive declare: it must exist)."""
    channel = await connection.channel()
    try:
        queue = await channel.declare_queue(name, passive=True)
        return queue.declaration_result.message_count or 0
    finally:
        await channel.close()


def listed_ready_messages(url: str) -> dict[str, int]:
    """Ready messages in each queue of `url`'s vhost, as `rabbitmqctl list_queues` counts
    them (the broker's own tool, not an AMQP client's view); skips (fails in CI) without it."""
    vhost = unquote(urlsplit(url).path.lstrip("/")) or "/"
    listed = _rabbitmqctl(
        "list_queues", "-p", vhost, "name", "messages_ready", "--quiet", "--no-table-headers"
    )
    require_service("rabbitmqctl", listed is not None, f"list_queues -p {vhost} failed")
    assert listed is not None
    return {
        name: int(count)
        for name, count in (line.split() for line in listed.splitlines() if line.strip())
    }


async def take_dead_letters(
    connection: AbstractConnection, prefix: str, count: int, timeout: float = 5.0
) -> list[AbstractIncomingMessage]:
    """Take `count` messages off the dead-letter queue as the broker delivers them; then
    check that no more wait there."""
    dead_letters = prefix + "agents.dead_letter"
    taken: list[AbstractIncomingMessage] = []
    channel = await connection.channel()
    try:
        await channel.set_qos(prefetch_count=1)  # a further letter stays in the queue
        queue = await channel.declare_queue(dead_letters, passive=True)
        async with asyncio.timeout(timeout), queue.iterator() as letters:
            async for letter in letters:
                await letter.ack()
                taken.append(letter)
                if len(taken) == count:
                    break
    finally:
        await channel.close()  # one delivered but not taken goes back to the queue
    extra = await queue_depth(connection, dead_letters)
    assert extra == 0, f"{extra} more dead letter(s) than expected"
    return taken


async def publish_bare(url: str, exchange: str, routing_key: str, body: bytes) -> None:
    """Publish as a minimal AMQP client does: no `message_id` property, no headers.

    aio-pika (aiormq) always sets a random `message_id`, so it cannot stand in for clients that
    set none (pika, the Java client by default); this speaks AMQP 0-9-1 itself (pamqp frames)
    and waits for the broker's confirm. An unroutable publish raises `AssertionError`.
    """
    target = URL(url)
    reader, writer = await asyncio.open_connection(target.host, target.port or 5672)
    buffer = b""

    async def receive() -> object:
        nonlocal buffer
        while True:
            if buffer:
                try:
                    used, _channel, value = frame.unmarshal(buffer)
                except UnmarshalingException:
                    pass  # a partial frame: read more
                else:
                    buffer = buffer[used:]
                    return value
            chunk = await reader.read(65536)
            assert chunk, "the broker closed the connection"
            buffer += chunk

    async def expect(kind: type) -> object:
        while not isinstance(value := await receive(), kind):
            assert not isinstance(value, commands.Channel.Close | commands.Connection.Close), value
        return value

    def send(value: object, channel: int = 0) -> None:
        writer.write(frame.marshal(value, channel))  # type: ignore[arg-type]

    try:
        async with asyncio.timeout(10):
            writer.write(header.ProtocolHeader().marshal())
            await expect(commands.Connection.Start)
            send(
                commands.Connection.StartOk(
                    mechanism="PLAIN",
                    response=f"\0{target.user or 'guest'}\0{target.password or 'guest'}",
                )
            )
            tune = await expect(commands.Connection.Tune)
            assert isinstance(tune, commands.Connection.Tune)
            send(commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
            send(commands.Connection.Open(virtual_host=target.path[1:] or "/"))
            await expect(commands.Connection.OpenOk)
            send(commands.Channel.Open(), 1)
            await expect(commands.Channel.OpenOk)
            send(commands.Confirm.Select(), 1)
            await expect(commands.Confirm.SelectOk)
            send(
                commands.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=True),
                1,
            )
            send(header.ContentHeader(0, len(body), commands.Basic.Properties()), 1)
            send(ContentBody(body), 1)
            answer = await receive()
            while not isinstance(answer, commands.Basic.Ack | commands.Basic.Return):
                answer = await receive()
            assert isinstance(answer, commands.Basic.Ack), f"not routed: {answer}"
            send(commands.Connection.Close(200, "done", 0, 0), 0)
            await expect(commands.Connection.CloseOk)
    finally:
        writer.close()


def consumer_prefetch(url: str, prefix: str) -> dict[str, list[int]]:
    """The prefetch count of every consumer of the queues under `prefix`, as the broker reports
    them (`rabbitmqctl list_consumers`); skips the test when rabbitmqctl cannot be used."""
    if shutil.which("rabbitmqctl") is None or not url.startswith(AMQP_URL.rstrip("/")):
        pytest.skip("needs rabbitmqctl on the broker's machine")
    vhost = unquote(urlsplit(url).path[1:]) or "/"
    command = ["rabbitmqctl", "list_consumers", "-p", vhost, "--quiet", "--no-table-headers"]
    done = subprocess.run(
        [*command, "queue_name", "prefetch_count"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found: dict[str, list[int]] = {}
    for line in done.stdout.splitlines():
        queue, _, count = line.rpartition("\t")
        if queue.startswith(prefix):
            found.setdefault(queue.removeprefix(prefix), []).append(int(count))
    return {queue: sorted(counts) for queue, counts in found.items()}
