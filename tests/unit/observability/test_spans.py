"""mas's spans for an SDK TracerProvider (`mas.observability.spans`): what a tracing backend
receives must be what the SDK's own spans would give it, sampling included.

Each parity test makes one span with the SDK's tracer and one with the recorder from the same
provider and inputs, and compares what the exporter got.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from mas import Agent, HandlerResult, Message, Runtime
from mas.observability import tracing
from mas.observability.spans import RecordedSpan, SpanRecorder, recorder_for

pytestmark = pytest.mark.anyio

REMOTE = SpanContext(
    0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)  # fmt: skip


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "parity"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _recorder(provider: TracerProvider) -> SpanRecorder:
    recorder = recorder_for(provider.get_tracer("mas", "1.0"), "mas", "1.0")
    assert recorder is not None
    return recorder


def _fields(span: ReadableSpan) -> dict[str, Any]:
    """What an exporter reads from a span, but its own ids and times."""
    context = span.context
    assert context is not None
    return {
        "name": span.name,
        "kind": span.kind,
        "trace_id": context.trace_id,
        "flags": context.trace_flags,
        "parent": span.parent,
        "attributes": dict(span.attributes or {}),
        "events": [(event.name, dict(event.attributes or {})) for event in span.events],
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "status": (span.status.status_code, span.status.description),
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
        "dropped": span.dropped_attributes,
    }


def _use(span: trace.Span) -> None:
    """What a handler and mas do to a span in its life."""
    span.add_link(REMOTE, {"why": "follows"})
    span.set_attribute("user.key", "v")
    span.set_attributes({"user.n": 3, "user.bad": object()})  # type: ignore[dict-item]
    span.add_event("checkpoint", {"at": 1})
    span.update_name("renamed")
    span.record_exception(ValueError("no"))
    span.set_status(Status(StatusCode.ERROR, "ValueError: no"))
    span.end()
    span.set_attribute("after.end", 1)  # ignored, as the SDK does
    span.end()  # ended once


def test_a_recorded_span_exports_what_an_sdk_span_would(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    parent = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE))
    attributes = {"messaging.message.id": "m1", "mas.attempt": 1}
    _use(provider.get_tracer("mas", "1.0").start_span("x", parent, SpanKind.CONSUMER, attributes))
    _use(_recorder(provider).start_span("x", parent, SpanKind.CONSUMER, attributes))

    sdk, recorded = exporter.get_finished_spans()
    assert isinstance(recorded, ReadableSpan)
    assert _fields(recorded) == _fields(sdk)
    assert recorded.parent == REMOTE and recorded.attributes == {
        "messaging.message.id": "m1",
        "mas.attempt": 1,
        "user.key": "v",
        "user.n": 3,
        "user.bad": None,  # not a valid value: kept as None, as the SDK keeps it
    }
    assert recorded.start_time is not None and recorded.end_time is not None
    assert recorded.start_time <= recorded.end_time


def test_a_root_span_and_a_child_of_the_current_span_are_made_as_the_sdk_makes_them(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    recorder = _recorder(provider)
    root = recorder.start_span("root", Context(), SpanKind.PRODUCER, None)
    with trace.use_span(root, end_on_exit=True):
        child = recorder.start_span("child", None, SpanKind.CLIENT, {"k": "v"})
        child.end()
    sdk_root = provider.get_tracer("mas", "1.0").start_span("root", Context(), SpanKind.PRODUCER)
    sdk_root.end()

    recorded_child, recorded_root, sdk = exporter.get_finished_spans()
    assert recorded_root.parent is None
    assert recorded_child.parent == root.get_span_context()
    assert _fields(recorded_root) | {"trace_id": 0} == _fields(sdk) | {"trace_id": 0}


def test_the_providers_sampler_decides(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    _, exporter = exported
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    span = _recorder(provider).start_span("dropped", Context(), SpanKind.CONSUMER, None)
    assert not span.is_recording() and not isinstance(span, RecordedSpan)
    assert span.get_span_context().is_valid and not span.get_span_context().trace_flags.sampled
    span.end()
    assert exporter.get_finished_spans() == ()


def test_a_tracer_that_is_not_the_sdks_makes_its_own_spans() -> None:
    assert recorder_for(trace.NoOpTracerProvider().get_tracer("mas"), "mas", None) is None


class Annotating(Agent):
    """Adds to the span mas runs it in, as a handler using OpenTelemetry would."""

    type = "annotating"

    async def handle_message(self, message: Message) -> HandlerResult:
        span = trace.get_current_span()
        span.set_attribute("order.id", message.payload["order"])
        span.add_event("priced")
        return message.reply({"ok": True})


async def test_what_a_handler_adds_to_its_span_is_exported(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    tracing.use(provider)
    try:
        async with Runtime() as rt:
            agent = await rt.spawn(Annotating, id="annotating")
            await agent.ask(Message("price", {"order": "o-7"}), timeout=5)
    finally:
        tracing.use(None)
    [handled] = [span for span in exporter.get_finished_spans() if span.name == "handle price"]
    assert handled.attributes is not None and handled.attributes["order.id"] == "o-7"
    assert handled.attributes["mas.agent.id"] == "annotating"
    assert [event.name for event in handled.events] == ["priced"]


async def test_a_runtime_traced_by_another_api_implementation_still_runs() -> None:
    tracing.use(trace.NoOpTracerProvider())
    try:
        async with Runtime() as rt:
            agent = await rt.spawn(Annotating, id="annotating")
            reply = await agent.ask(Message("price", {"order": "o-8"}), timeout=5)
    finally:
        tracing.use(None)
    assert reply.payload == {"ok": True}


class Reading(SpanProcessor):
    """Reads a span as it starts, as processors that enrich or route spans do."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any, dict[str, Any]]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.seen.append((span.name, span.kind, dict(span.attributes)))


def test_a_processor_reads_a_span_as_it_starts() -> None:
    provider = TracerProvider()
    reading = Reading()
    provider.add_span_processor(reading)
    span = _recorder(provider).start_span("x", Context(), SpanKind.CONSUMER, {"k": "v"})
    span.end()
    assert reading.seen == [("x", SpanKind.CONSUMER, {"k": "v"})]


def test_an_error_leaving_a_span_block_is_recorded_as_the_sdk_records_it(
    exported: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = exported
    for start in (provider.get_tracer("mas", "1.0").start_span, _recorder(provider).start_span):
        with pytest.raises(ValueError, match="no"), start("x", Context(), SpanKind.INTERNAL, None):
            raise ValueError("no")
    sdk, recorded = exporter.get_finished_spans()
    assert _fields(recorded) | {"trace_id": 0} == _fields(sdk) | {"trace_id": 0}
    assert recorded.status.status_code is StatusCode.ERROR
