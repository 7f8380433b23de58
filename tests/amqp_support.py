"""RabbitMQ fixtures shared by the conformance, integration and end-to-end tests.

A test session gets its own vhost `mas-test-<hex>` (made with `rabbitmqctl`, deleted at the end
with everything in it) when `rabbitmqctl` can reach the broker; otherwise it uses the URL's
vhost as it is. Every test also gets its own name prefix, and deletes the queues and exchanges
it declared, so tests never see each other's messages. When RabbitMQ is unreachable the test
skips — or fails under MAS_REQUIRE_SERVICES=1 (see `require_service` in tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import quote

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage
from aio_pika.exceptions import AMQPError

from mas.config import AmqpSettings
from mas.transports.amqp import AmqpTransport
from tests.conftest import require_service

__all__ = [
    "AMQP_URL",
    "AmqpScope",
    "amqp_scope",
    "amqp_vhost_url",
    "delete_topology",
    "queue_depth",
    "take_dead_letters",
]

AMQP_URL = os.environ.get("MAS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

EXCHANGES = ("agents.direct", "agents.topic", "agents.delay", "agents.dlx")


def _rabbitmqctl(*args: str) -> bool:
    if shutil.which("rabbitmqctl") is None or AMQP_URL != "amqp://guest:guest@127.0.0.1:5672/":
        return False
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60, check=False)
    return done.returncode == 0


@pytest.fixture(scope="session")
def amqp_vhost_url() -> Iterator[str]:
    """The session's broker URL: a private vhost when rabbitmqctl is at hand."""
    vhost = f"mas-test-{uuid.uuid4().hex[:8]}"
    if not _rabbitmqctl("add_vhost", vhost):
        yield AMQP_URL
        return
    try:
        if _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"):
            yield AMQP_URL.rstrip("/") + "/" + quote(vhost, safe="")
        else:
            yield AMQP_URL
    finally:
        _rabbitmqctl("delete_vhost", vhost)


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
