"""The conformance suite runs the same behavioural tests against every transport.

`cluster(n)` starts n runtimes ("nodes") that share one transport fabric: a `MemoryBroker`
for the memory transport, a per-test name prefix on the real RabbitMQ for `rabbitmq`. A
transport is done when it passes every test here. `settle_all` waits until every node is
idle and, on a broker, until no message waits in any queue the nodes declared.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest

from mas.actors.clock import LoopClock
from mas.testing import TestRuntime
from mas.transports.amqp import AmqpTransport
from mas.transports.base import Transport
from mas.transports.memory import MemoryBroker, MemoryTransport
from tests.amqp_support import AmqpScope, amqp_scope, amqp_vhost_url

__all__ = ["Cluster", "amqp_scope", "amqp_vhost_url", "settle_all"]

TRANSPORTS = ["memory", pytest.param("rabbitmq", marks=pytest.mark.integration)]

Cluster = Callable[..., AbstractAsyncContextManager[list[TestRuntime]]]


@pytest.fixture(params=TRANSPORTS)
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(transport_kind: str, request: pytest.FixtureRequest) -> Cluster:
    if transport_kind == "rabbitmq":
        scope: AmqpScope = request.getfixturevalue("amqp_scope")
        make: Callable[[], Transport] = scope.transport
    else:
        broker = MemoryBroker(serialize=True)

        def make() -> Transport:
            return MemoryTransport(broker)

    @asynccontextmanager
    async def start(nodes: int = 2, **settings: object) -> AsyncIterator[list[TestRuntime]]:
        # A broker's messages travel in real time, so its nodes use the loop's clock.
        clock = {"clock": LoopClock()} if transport_kind == "rabbitmq" else {}
        async with AsyncExitStack() as stack:
            runtimes = [
                await stack.enter_async_context(
                    TestRuntime(transport=make(), node_id=f"n{i}", **clock, **settings)  # type: ignore[arg-type]
                )
                for i in range(nodes)
            ]
            yield runtimes

    return start


def _handled(runtimes: list[TestRuntime]) -> list[int]:
    return [rt.handled + rt.dead_letters.count for rt in runtimes]


async def settle_all(runtimes: list[TestRuntime], timeout: float = 30.0) -> None:
    """Settle every node until two passes in a row find nothing left to do anywhere."""
    quiet = 0
    on_a_broker = any(isinstance(rt.transport, AmqpTransport) for rt in runtimes)
    async with asyncio.timeout(timeout):
        while quiet < 2:
            before = _handled(runtimes)
            for rt in runtimes:
                await rt.settle()
            busy = before != _handled(runtimes)
            for rt in runtimes:
                transport = rt.transport
                if isinstance(transport, AmqpTransport):
                    depths = await transport.queue_depths()
                    waiting = {q: n for q, n in depths.items() if n and "dead_letter" not in q}
                    busy = busy or bool(waiting) or not transport.idle
            quiet = 0 if busy else quiet + 1
            if busy and on_a_broker:
                # Messages on the wire have no event to wait on: poll the broker's queues.
                await asyncio.sleep(0.02)
