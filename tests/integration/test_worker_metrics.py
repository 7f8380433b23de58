"""Metrics from every process: `mas worker --metrics-port` over RabbitMQ and PostgreSQL.

Prometheus scrapes each process and sums; these tests scrape real worker processes the same
way and check that the sums are the cluster's exact totals, that the broker-depth gauge is
the broker's own count, and that a worker answers probes and scrapes while it drains.
"""

from __future__ import annotations

import aio_pika
import anyio
import httpx
import pytest

from mas.testing import eventually
from tests.amqp_support import amqp_scope, amqp_vhost_url, listed_ready_messages, queue_depth
from tests.integration.system_support import SLOW_ECHO, System, system
from tests.metrics_support import Samples, samples
from tests.process_support import MasProcess

__all__ = ["amqp_scope", "amqp_vhost_url", "system"]

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

METRICS = {"metrics-port": "0"}


def metrics_url(process: MasProcess) -> str:
    """The /metrics URL the worker printed when it started."""
    line = process.wait_for(lambda line: line.startswith("  metrics: "))
    return line.split()[1]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry `labels` (other labels summed over)."""
    wanted = set(labels.items())
    return sum(value for key, value in found.get(name, {}).items() if wanted <= set(key))


async def test_two_workers_scraped_totals_are_the_messages_sent(system: System) -> None:
    count = 40
    workers = [system.worker("agents.echo:EchoAgent", **METRICS) for _ in range(2)]
    urls = [metrics_url(worker) for worker in workers]
    system.api()
    async with system.client() as client:
        ids = []
        for n in range(count):
            created = await client.post("/tasks/", json={"type": "echo", "payload": {"n": n}})
            assert created.status_code == 202, created.text
            ids.append(created.json()["id"])
        for task_id in ids:
            done = await client.get(f"/tasks/{task_id}", params={"wait": 60})
            assert done.json()["status"] == "succeeded", done.text
        at_gateway = samples((await client.get("/metrics")).text)

    scraped = [await scrape(url) for url in urls]
    handled = [
        total(found, "agent_tasks_processed_total", agent_type="echo", status="succeeded")
        for found in scraped
    ]
    assert sum(handled) == count, handled
    assert all(each > 0 for each in handled), handled  # both workers took a share
    timed = [
        total(found, "agent_task_duration_seconds_count", agent_type="echo", status="succeeded")
        for found in scraped
    ]
    assert timed == handled
    for found in scraped:
        assert total(found, "agent_tasks_processed_total", status="failed") == 0
        assert total(found, "mas_broker_queue_messages", agent_type="echo") == 0
        assert total(found, "mas_agents", agent_type="echo") == 1
    # The gateway hosts no agent: it counts none of the workers' runs.
    assert total(at_gateway, "agent_tasks_processed_total", agent_type="echo") == 0


async def test_the_queue_depth_gauge_is_the_brokers_count_and_survives_a_drain(
    system: System,
) -> None:
    prefetch = 2
    worker = system.start(
        ["worker", "--agents", SLOW_ECHO, "--metrics-port", "0"],
        MAS_AMQP__PREFETCH=str(prefetch),
        MAS_SHUTDOWN_TIMEOUT="5",
    )
    worker.wait_for(lambda line: "ready; SIGTERM" in line)
    url = metrics_url(worker)
    base = url.removesuffix("/metrics")
    system.api()
    count = 10
    async with system.client() as client:
        for n in range(count):
            created = await client.post(
                "/tasks/", json={"type": "slow_echo", "payload": {"n": n, "delay": 600}}
            )
            assert created.status_code == 202, created.text
    queue = f"{system.prefix}agent_type.slow_echo"
    connection = await aio_pika.connect(system.amqp_url)
    try:

        async def agree() -> bool:
            found = await scrape(url)
            depth = total(found, "mas_broker_queue_messages", agent_type="slow_echo")
            return depth == await queue_depth(connection, queue) == count - prefetch

        await eventually(agree, timeout=60, interval=0.2)
    finally:
        await connection.close()

    # The broker's own tool (what an operator reads) counts the same once its statistics
    # catch up (RabbitMQ emits them every few seconds), and a scrape then says so too: the
    # backlog holds while the worker holds its prefetch.
    async def listed_agrees() -> bool:
        ready = await anyio.to_thread.run_sync(listed_ready_messages, system.amqp_url)
        return ready.get(queue) == count - prefetch

    await eventually(listed_agrees, timeout=60, interval=1)
    depth = total(await scrape(url), "mas_broker_queue_messages", agent_type="slow_echo")
    assert depth == count - prefetch
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"runtime": "ok", "transport": "ok", "store": "ok"}
        # SIGTERM: the two handlers hold the drain for MAS_SHUTDOWN_TIMEOUT, and meanwhile
        # the worker still answers, saying it takes no more work.
        worker.process.terminate()
        worker.wait_for(lambda line: '"event": "runtime_stopping"' in line)
        draining = await client.get("/readyz")
        scraped = await client.get("/metrics")
        live = await client.get("/livez")
    assert draining.status_code == 503, draining.text
    assert draining.headers["retry-after"] == "1"
    assert draining.json()["checks"]["runtime"] == "stopped"
    assert scraped.status_code == 200
    assert live.json() == {"status": "ok"}
    assert worker.terminate() == 0
