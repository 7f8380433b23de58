"""A real RabbitMQ restart mid-run: connections come back, consumers resume, nothing is lost.

The broker on this machine is stopped and started again (`rabbitmqctl stop_app/start_app`)
while one node sends to an agent on another. Sends made during the outage wait (bounded by
`publish_timeout`) and go through once the broker is back; every message is handled exactly
once. The test restores the broker even when it fails.
"""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from yarl import URL

from mas import Agent, HandlerResult, Message
from mas.actors.clock import LoopClock
from mas.testing import TestRuntime, eventually
from mas.transports.amqp import AmqpTransport
from tests.amqp_support import AMQP_URL, AmqpScope, amqp_scope, amqp_vhost_url
from tests.conformance.conftest import settle_all
from tests.conftest import require_service

__all__ = ["amqp_scope", "amqp_vhost_url"]

pytestmark = pytest.mark.anyio


async def _rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 120)
    if process.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {err.decode()}")


@pytest.fixture
async def restartable(amqp_scope: AmqpScope) -> AsyncIterator[None]:
    local = URL(AMQP_URL).host in ("127.0.0.1", "localhost")
    require_service(
        "rabbitmqctl",
        local and shutil.which("rabbitmqctl") is not None,
        "restarting the broker needs rabbitmqctl and a broker on this machine",
    )
    try:
        yield
    finally:
        await _rabbitmqctl("start_app")  # a no-op when it runs; the broker is back either way
        await _rabbitmqctl("await_startup")


async def test_a_broker_restart_loses_nothing_and_handles_nothing_twice(
    amqp_scope: AmqpScope, restartable: None
) -> None:
    seen: Counter[str] = Counter()

    class Ledger(Agent):
        type = "ledger"

        async def handle_message(self, message: Message) -> HandlerResult:
            seen[message.id] += 1
            return None

    fast_reconnect = str(URL(amqp_scope.url).update_query(reconnect_interval="0.5"))

    def transport() -> AmqpTransport:
        made = AmqpTransport(fast_reconnect, amqp_scope.settings(publish_timeout=60.0))
        amqp_scope.transports.append(made)
        return made

    sender = TestRuntime(transport=transport(), node_id="sender", clock=LoopClock())
    host = TestRuntime(transport=transport(), node_id="host", clock=LoopClock())
    ids = [f"entry-{n}" for n in range(150)]
    async with sender, host:
        await host.spawn(Ledger, id="ledger")
        for message_id in ids[:50]:
            await sender.tell("agent:ledger", Message("entry", {}, id=message_id))
        await _rabbitmqctl("stop_app")
        await eventually(lambda: not host.transport.ready, timeout=30)  # what /readyz reports
        # Sent while the broker is down: each waits for it to come back.
        during = asyncio.gather(
            *(sender.tell("agent:ledger", Message("entry", {}, id=i)) for i in ids[50:100])
        )
        await _rabbitmqctl("start_app")
        await _rabbitmqctl("await_startup")
        await asyncio.wait_for(during, 60)
        await eventually(lambda: host.transport.ready, timeout=30)
        for message_id in ids[100:]:
            await sender.tell("agent:ledger", Message("entry", {}, id=message_id))
        await settle_all([sender, host], timeout=60)
        # The reply queue came back too: an ask across the nodes still works.
        await host.spawn(Echo, id="echo")
        reply = await sender.ask("agent:echo", Message("ping", {"n": 1}), timeout=10)
    assert reply.payload == {"n": 1}
    assert set(seen) == set(ids), f"lost: {sorted(set(ids) - set(seen))[:10]}"
    assert max(seen.values()) == 1, f"handled twice: {[m for m, n in seen.items() if n > 1]}"


class Echo(Agent):
    type = "echo"

    async def handle_message(self, message: Message) -> HandlerResult:
        return message.reply(dict(message.payload))
