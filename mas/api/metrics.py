"""Prometheus metrics, read from the runtime's plain counters at scrape time.

The runtime only increments integers on its hot path; this collector turns them into
metric families when /metrics is scraped, so metrics cost nothing per message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mas.messages import Message, TaskResult
from mas.runtime import Runtime

__all__ = ["RuntimeMetrics"]

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0)


class _RuntimeCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.ended: Counter[str] = Counter({"succeeded": 0, "failed": 0})

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        rt = self.runtime
        stats = rt.stats()
        tasks = CounterMetricFamily(
            "agent_tasks_processed", "Tasks ended on this node, by status", labels=["status"]
        )
        for status, count in sorted(self.ended.items()):
            tasks.add_metric([status], float(count))
        yield tasks
        yield GaugeMetricFamily(
            "agent_tasks_in_queue", "Messages waiting in local mailboxes", value=stats["in_queue"]
        )
        yield GaugeMetricFamily("mas_agents", "Agents hosted by this node", value=stats["agents"])
        for name, doc, value in (
            ("mas_messages_handled", "Messages handled by local agents", rt.handled),
            ("mas_handler_failures", "Handler invocations that raised", rt.failures),
            ("mas_agent_restarts", "Agent restarts by supervisors", rt.restarts),
            ("mas_duplicates_skipped", "Duplicate message ids not handled again", rt.duplicates),
            ("mas_dead_letters", "Messages moved to dead letters", rt.dead_letters.count),
        ):
            yield CounterMetricFamily(name, doc, value=float(value))


class RuntimeMetrics:
    """A registry with the runtime's counters and the task duration histogram."""

    def __init__(self, runtime: Runtime) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.collector = _RuntimeCollector(runtime)
        self.registry.register(self.collector)
        self.durations = Histogram(
            "agent_task_duration_seconds",
            "Seconds from a task's message being sent to the task ending",
            ["status"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    async def on_task_ended(self, result: TaskResult, message: Message) -> None:
        self.collector.ended[result.status] += 1  # a dead-lettered task arrives as failed
        elapsed = (datetime.now(UTC) - message.created_at).total_seconds()
        self.durations.labels(result.status).observe(max(elapsed, 0.0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
