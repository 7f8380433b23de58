"""OpenTelemetry spans in one process: what a user sees in a tracing backend.

A real SDK TracerProvider with an in-memory exporter; the runtime is a plain one (spans are
made where the runtime hands messages over, which the test kit's runtime does too).
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mas import Agent, HandlerResult, Message, Runtime, Settings
from mas.config import RetrySettings
from mas.observability import tracing
from tests.otel_support import named, spans

__all__ = ["spans"]

pytestmark = pytest.mark.anyio


class Relay(Agent):
    """Answers `q` after telling `echo` about it; fails on `boom`."""

    type = "relay"
    max_attempts = 2

    async def handle_message(self, message: Message) -> HandlerResult:
        if message.type == "boom":
            raise RuntimeError("boom")
        await self.ctx.send("agent:sink", Message("noted", {}))
        return message.reply({"ok": True})


class Sink(Agent):
    type = "sink"

    async def handle_message(self, message: Message) -> HandlerResult:
        return None


def _settings() -> Settings:
    return Settings(retry=RetrySettings(base_delay=0.0, max_delay=0.0, jitter=0.0))


async def test_an_ask_its_handling_and_what_the_handler_sends_are_one_tree(
    spans: InMemorySpanExporter,
) -> None:
    async with Runtime(_settings()) as rt:
        relay = await rt.spawn(Relay, id="relay")
        await rt.spawn(Sink, id="sink")
        question = Message("q", {})
        reply = await relay.ask(question, timeout=5)
        await rt.settle()

    found = named(spans)
    ask, handled, noted = found["ask agent:relay"], found["handle q"], found["handle noted"]
    assert ask.kind is SpanKind.CLIENT and handled.kind is SpanKind.CONSUMER
    assert ask.parent is None  # it started the trace
    assert handled.parent is not None and handled.parent.span_id == ask.context.span_id
    assert noted.parent is not None and noted.parent.span_id == handled.context.span_id
    trace_ids = {span.context.trace_id for span in (ask, handled, noted)}
    assert len(trace_ids) == 1
    # The trace id is the one the messages carry (and the logs show).
    assert reply.trace_id == f"{trace_ids.pop():032x}"
    assert handled.attributes is not None
    assert handled.attributes["mas.agent.id"] == "relay"
    assert handled.attributes["messaging.message.id"] == question.id


async def test_a_failed_run_is_an_error_span_per_attempt(spans: InMemorySpanExporter) -> None:
    async with Runtime(_settings()) as rt:
        relay = await rt.spawn(Relay, id="relay")
        await relay.tell(Message("boom", {}))
        await rt.settle()

    runs = [span for span in spans.get_finished_spans() if span.name == "handle boom"]
    assert [span.attributes["mas.attempt"] for span in runs if span.attributes] == [1, 2]
    for span in runs:
        assert span.status.status_code is StatusCode.ERROR
        assert [event.name for event in span.events] == ["exception"]
    # Each attempt continues the sender's trace: one trace for the message.
    assert len({span.context.trace_id for span in runs}) == 1


async def test_a_message_that_starts_a_trace_lends_the_span_its_trace_id(
    spans: InMemorySpanExporter,
) -> None:
    message = Message("noted", {}, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    async with Runtime(_settings()) as rt:
        sink = await rt.spawn(Sink, id="sink")
        await sink.tell(message)  # from outside any span: its handling starts the trace
        await rt.settle()
    [handled] = spans.get_finished_spans()
    assert handled.parent is None
    assert f"{handled.context.trace_id:032x}" == message.trace_id


async def test_without_tracing_the_runtime_makes_no_span(spans: InMemorySpanExporter) -> None:
    tracing.use(None)
    async with Runtime(_settings()) as rt:
        assert rt.tracing is None
        relay = await rt.spawn(Relay, id="relay")
        await rt.spawn(Sink, id="sink")
        await relay.ask(Message("q", {}), timeout=5)
    assert spans.get_finished_spans() == ()
