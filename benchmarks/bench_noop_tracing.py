"""`python -m bench_noop_tracing worker ...`: the `mas` command with OpenTelemetry's SDK making,
batching and then dropping every span (a no-op exporter).

The distributed benchmark's `traced_noop` variant runs its workers so, to measure what tracing
costs mas itself (the issue's budget: at most 20% of distributed throughput) apart from what an
exporter costs to encode and post spans (the `traced` variant, which exports over OTLP/HTTP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from mas.observability import tracing

SPAN_DELAY_MS = 500  # as the traced variant's OTEL_BSP_SCHEDULE_DELAY


class DroppingExporter(SpanExporter):
    """Takes every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def noop_provider(service: str) -> Any:
    """A TracerProvider as `mas worker` builds one, exporting to `DroppingExporter`."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": service}),
        id_generator=tracing.id_generator(),
    )
    processor = BatchSpanProcessor(DroppingExporter(), schedule_delay_millis=SPAN_DELAY_MS)
    provider.add_span_processor(processor)
    return provider


if __name__ == "__main__":
    from mas.cli import app

    provider = noop_provider("mas-worker")
    tracing.use(provider)
    try:
        app()
    finally:
        provider.shutdown()
