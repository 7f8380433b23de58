"""The conformance suite runs the same behavioural tests against every transport.

`cluster(n)` starts n runtimes ("nodes") that share one transport fabric: a `MemoryBroker`
for the memory transport. A transport is done when it passes every test here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager

import pytest

from mas.testing import TestRuntime
from mas.transports.memory import MemoryBroker, MemoryTransport

TRANSPORTS = ["memory"]

Cluster = Callable[..., AbstractAsyncContextManager[list[TestRuntime]]]


@pytest.fixture(params=TRANSPORTS)
def transport_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def cluster(transport_kind: str) -> Cluster:
    @asynccontextmanager
    async def start(nodes: int = 2, **settings: object) -> AsyncIterator[list[TestRuntime]]:
        broker = MemoryBroker(serialize=True)
        async with AsyncExitStack() as stack:
            runtimes = [
                await stack.enter_async_context(
                    TestRuntime(transport=MemoryTransport(broker), node_id=f"n{i}", **settings)
                )
                for i in range(nodes)
            ]
            yield runtimes

    return start
