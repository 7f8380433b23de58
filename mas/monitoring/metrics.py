"""Prometheus metrics of one process, read from the runtime's plain counters at scrape time.

The runtime only adds to integers on its hot path (`mas.actors.counters`); this collector
turns them into metric families when /metrics is scraped, so metrics cost nothing per
message. Every process that hosts agents serves them (`mas up`, `mas api`, and `mas worker`
with a metrics port), each about its own work only, so summing a metric over processes
gives the cluster's exact total.

The names of the original design, labelled by agent type:
- `agent_tasks_processed_total{agent_type, status}`: handler runs, `succeeded` or `failed`
  (a message retried three times counts three runs);
- `agent_task_duration_seconds{agent_type, status}`: how long those handlers ran, measured
  in the process that ran them;
- `agent_tasks_in_queue{agent_type}`: messages waiting in this process's mailboxes.
And the broker's view, the autoscaling signal: `mas_broker_queue_messages{agent_type}`, the
ready messages of each type queue this process consumes, as the broker counts them. Every
consumer of a queue reports the same number: aggregate it with `max`, not `sum`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mas.actors.counters import DURATION_BOUNDS, AgentCounters, Durations
from mas.errors import MasError
from mas.messages import Message, TaskResult

if TYPE_CHECKING:
    from mas.runtime import Runtime

__all__ = ["BROKER_READ_TIMEOUT", "RuntimeMetrics"]

BROKER_READ_TIMEOUT = 2.0
"""Seconds a scrape waits for the broker's queue depths; past it they are left out."""

_BOUNDS = [str(bound) for bound in DURATION_BOUNDS] + ["+Inf"]


class _RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.broker_depths: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        rt = self.runtime
        counters = sorted(rt.counters.values(), key=lambda each: each.agent_type)
        yield _processed(counters)
        yield _durations(counters)
        by_type = rt.agents_by_type()
        queued = GaugeMetricFamily(
            "agent_tasks_in_queue",
            "Messages waiting in this process's mailboxes, by agent type",
            labels=["agent_type"],
        )
        agents = GaugeMetricFamily(
            "mas_agents", "Agents hosted by this process, by agent type", labels=["agent_type"]
        )
        for agent_type, (count, waiting) in sorted(by_type.items()):
            queued.add_metric([agent_type], float(waiting))
            agents.add_metric([agent_type], float(count))
        yield queued
        yield agents
        broker = GaugeMetricFamily(
            "mas_broker_queue_messages",
            "Ready messages in the broker queue of an agent type this process consumes, as "
            "the broker counts them (every consumer reports the same number: use max)",
            labels=["agent_type"],
        )
        for agent_type, depth in sorted(self.broker_depths.items()):
            broker.add_metric([agent_type], float(depth))
        yield broker
        for name, doc, attribute in (
            ("mas_message_retries", "Failed handler runs scheduled again", "retried"),
            ("mas_agent_restarts", "Agents restarted by their supervisors", "restarts"),
            ("mas_duplicates_skipped", "Messages not handled again (seen before)", "duplicates"),
            (
                "mas_handler_dead_letters",
                "Messages dead-lettered after their handler's last attempt",
                "dead_lettered",
            ),
        ):
            family = CounterMetricFamily(name, doc, labels=["agent_type"])
            for each in counters:
                family.add_metric([each.agent_type], float(getattr(each, attribute)))
            yield family
        letters = CounterMetricFamily(
            "mas_dead_letters", "Messages moved to dead letters, by reason", labels=["reason"]
        )
        for reason, count in sorted(rt.dead_letters.by_reason.items()):
            letters.add_metric([reason], float(count))
        yield letters
        stats = rt.stats()
        for name, doc, value in (
            ("mas_handlers_parked", "Handlers that gave up their agent in a long wait", "parked"),
            ("mas_handlers_cancelled", "Handlers cancelled with their task", "cancelled"),
        ):
            yield CounterMetricFamily(name, doc, value=float(stats[value]))


def _processed(counters: list[AgentCounters]) -> CounterMetricFamily:
    family = CounterMetricFamily(
        "agent_tasks_processed",
        "Handler runs in this process, by agent type and status (succeeded or failed)",
        labels=["agent_type", "status"],
    )
    for each in counters:
        family.add_metric([each.agent_type, "succeeded"], float(each.succeeded))
        family.add_metric([each.agent_type, "failed"], float(each.failed))
    return family


def _durations(counters: list[AgentCounters]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(
        "agent_task_duration_seconds",
        "Seconds handler runs took in this process, by agent type and status",
        labels=["agent_type", "status"],
    )
    for each in counters:
        for status, durations in (
            ("succeeded", each.succeeded_durations),
            ("failed", each.failed_durations),
        ):
            family.add_metric(
                [each.agent_type, status], _buckets(durations), sum_value=durations.total
            )
    return family


def _buckets(durations: Durations) -> list[tuple[str, float]]:
    return [
        (bound, float(count)) for bound, count in zip(_BOUNDS, durations.cumulative(), strict=True)
    ]


class RuntimeMetrics:
    """The registry one process serves at /metrics: its agents' counters and durations, the
    broker's depth of the queues it consumes, and how long its tasks took end to end."""

    def __init__(self, runtime: Runtime) -> None:
        runtime.time_handler_runs()
        self.runtime = runtime
        self.registry = CollectorRegistry(auto_describe=True)
        self.collector = _RuntimeCollector(runtime)
        self.registry.register(self.collector)
        self.latency = Histogram(
            "mas_task_latency_seconds",
            "Seconds from a task's message being sent to the task ending, for tasks that "
            "ended in this process",
            ["status"],
            buckets=DURATION_BOUNDS,
            registry=self.registry,
        )
        runtime.add_task_listener(self.on_task_ended)

    async def on_task_ended(self, result: TaskResult, message: Message) -> None:
        elapsed = (datetime.now(UTC) - message.created_at).total_seconds()
        self.latency.labels(result.status).observe(max(elapsed, 0.0))

    async def read_broker(self) -> None:
        """Ask the broker how deep the type queues this process consumes are (at most
        `BROKER_READ_TIMEOUT` seconds in all; a type it cannot read is left out)."""
        transport = self.runtime.transport
        depths: dict[str, int] = {}
        with anyio.move_on_after(BROKER_READ_TIMEOUT):
            for agent_type in sorted(self.runtime.agents_by_type()):
                try:
                    depth = await transport.backlog(f"type:{agent_type}")
                except MasError:
                    continue  # the broker is away: its outage is the readiness check's
                if depth is not None:
                    depths[agent_type] = depth
        self.collector.broker_depths = depths

    async def render(self) -> bytes:
        """The Prometheus text exposition, with the broker's depths read just now."""
        await self.read_broker()
        return generate_latest(self.registry)
