"""OpenTelemetry spans for one request across processes: HTTP, publish, handling, ask, commit.

Off unless asked for, and then only through OpenTelemetry's own configuration: the `mas`
commands turn it on when the standard `OTEL_*` variables name an exporter
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
`OTEL_TRACES_EXPORTER=otlp|console`; `OTEL_SDK_DISABLED=true` wins), and an application that
embeds a runtime calls `use(provider)` with its own TracerProvider. Off, nothing is imported
and the hot path tests one attribute for None.

One trace follows a message everywhere: the span that sends a message writes itself into the
message's metadata as a W3C `traceparent` (which the RabbitMQ transport also puts in the AMQP
headers), and the span that handles it, in whatever process, is its child. The trace id is
the message's `trace_id`, the one in the JSON logs and in `X-Trace-Id`: a span that starts a
trace takes it (`id_generator()`), so a log line and a span of one request share their id.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from mas.errors import ConfigError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.id_generator import IdGenerator
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from mas.messages import Message

__all__ = [
    "TRACEPARENT",
    "Tracing",
    "active",
    "configure_tracing",
    "id_generator",
    "shutdown_tracing",
    "use",
]

TRACEPARENT = "traceparent"
"""The message metadata key (and AMQP header) of the span that sent the message."""

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_NO_TRACE = "0" * 32
_NO_SPAN = "0" * 16

_active: Tracing | None = None
_configured: Any = None  # the TracerProvider `configure_tracing` made (shut down at exit)
_root_trace: ContextVar[int | None] = ContextVar("mas_root_trace", default=None)


def active() -> Tracing | None:
    """mas's tracing, or None when it is off (a runtime reads this when it is created)."""
    return _active


def use(provider: TracerProvider | None) -> None:
    """Send mas's spans to `provider` (an application's own), or turn them off (None).

    Runtimes created afterwards use it. For the span that starts a trace to take the
    message's trace id, build the provider with `id_generator=id_generator()`.
    """
    global _active
    _active = None if provider is None else Tracing(provider)


def wanted() -> bool:
    """Whether the `OTEL_*` environment asks for traces to be exported."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(service: str, node_id: str | None = None) -> str | None:
    """Turn tracing on for this process when the `OTEL_*` environment asks for it.

    The exporter (`otlp`, over HTTP/protobuf, or `console`), its endpoint, headers, timeout,
    the sampler and the batch processor's delays come from OpenTelemetry's own variables;
    `service` is the service name unless `OTEL_SERVICE_NAME` says otherwise. Returns where
    the spans go (for the command to say), or None when tracing stays off.

    Raises:
        ConfigError: tracing is asked for but the `otel` extra is not installed, or
            `OTEL_TRACES_EXPORTER` names an exporter mas does not ship.
    """
    global _configured
    if not wanted():
        return None
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() or "otlp"
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ConfigError(
            "OTEL_* asks for traces but OpenTelemetry is not installed: install "
            "mas-runtime[otel], or unset OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_ENDPOINT"
        ) from None
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter: Any = OTLPSpanExporter()
        env = os.environ
        where = "OTLP to " + (
            env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            or env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/")
            + "/v1/traces"
        )
    elif exporter_name == "console":
        exporter = ConsoleSpanExporter()
        where = "the console (stdout)"
    else:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r}: mas ships `otlp` (HTTP/protobuf) and "
            "`console`"
        )
    attributes = {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service}
    if node_id is not None:
        attributes["service.instance.id"] = node_id
    provider = TracerProvider(resource=Resource.create(attributes), id_generator=id_generator())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = provider
    use(provider)
    return where


def shutdown_tracing() -> None:
    """Export what is buffered and stop (bounded by the exporter's own timeout)."""
    global _configured
    provider, _configured = _configured, None
    if provider is not None:
        use(None)
        provider.shutdown()


def id_generator() -> IdGenerator:
    """Random ids, except that a span starting a trace takes the trace id mas chose."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class _MasIds(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            chosen = _root_trace.get()
            return chosen if chosen is not None else super().generate_trace_id()

    return _MasIds()


def _trace_number(trace_id: str | None) -> int | None:
    """`trace_id` as the number a span's trace id is, if it is 32 lowercase hex digits."""
    return int(trace_id, 16) if trace_id is not None and _HEX32.match(trace_id) else None


def traceparent_of(span: Span) -> str | None:
    """The W3C traceparent naming `span` (None for a span that records nothing)."""
    context = span.get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


class Tracing:
    """mas's spans, made with a tracer of one TracerProvider."""

    def __init__(self, provider: TracerProvider) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from opentelemetry import context, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from mas.observability.spans import recorder_for

        try:  # not `mas.__version__`: importing `mas` from here would make an import cycle
            mas_version: str | None = version("mas-runtime")
        except PackageNotFoundError:
            mas_version = None
        self.tracer: Tracer = provider.get_tracer("mas", mas_version)
        # An SDK tracer's spans are made by a recorder (a seventh of the cost, see spans.py);
        # any other implementation of the API makes its own.
        recorder = recorder_for(self.tracer, "mas", mas_version)
        self.start_span: Callable[[str, Context | None, Any, dict[str, Any] | None], Span] = (
            self.tracer.start_span if recorder is None else recorder.start_span
        )
        self._context = context
        self._trace = trace
        self._kind = SpanKind
        self._error = Status(StatusCode.ERROR)
        self._status = Status
        self._code = StatusCode

    # -- where a span's parent comes from ----------------------------------------------------

    def _parent(self, traceparent: Any) -> Context | None:
        """The context a remote `traceparent` names (None when it is missing or malformed)."""
        if type(traceparent) is not str:
            return None
        found = _TRACEPARENT.match(traceparent)  # as mas writes it: lowercase, no blanks
        if found is None:
            found = _TRACEPARENT.match(traceparent.strip().lower())
            if found is None:
                return None
        trace_id, span_id, flags = found.groups()
        if trace_id == _NO_TRACE or span_id == _NO_SPAN:
            return None
        trace = self._trace
        parent = trace.SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=trace.TraceFlags(int(flags, 16)),
        )
        context: Context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        return context

    @contextmanager
    def _root(self, trace_id: str | None) -> Iterator[None]:
        """Spans started here that begin a trace take `trace_id` (32 hex digits)."""
        token = _root_trace.set(_trace_number(trace_id))
        try:
            yield
        finally:
            _root_trace.reset(token)

    def _start(
        self,
        name: str,
        kind: Any,
        traceparent: Any,
        trace_id: str | None,
        attributes: dict[str, Any],
    ) -> Span:
        parent = self._parent(traceparent)
        if parent is not None:
            return self.start_span(name, parent, kind, attributes)
        # `_root` inlined (a span per message comes here: a generator less).
        token = _root_trace.set(_trace_number(trace_id))
        try:
            # An empty context: never the current span of whichever task this runs in.
            return self.start_span(name, self._context.Context(), kind, attributes)
        finally:
            _root_trace.reset(token)

    # -- spans -------------------------------------------------------------------------------

    def handling(self, message: Message, agent_id: str, agent_type: str, attempt: int) -> Span:
        """A handler's run of `message` (ended by the caller, `failed` first if it raised)."""
        attributes = {
            "messaging.message.id": message.id,
            "mas.agent.id": agent_id,
            "mas.agent.type": agent_type,
            "mas.attempt": attempt,
        }
        if message.task_id:
            attributes["mas.task.id"] = message.task_id
        return self._start(
            f"handle {message.type}",
            self._kind.CONSUMER,
            message.metadata.get(TRACEPARENT),
            message.trace_id,
            attributes,
        )

    def attach(self, span: Span) -> object:
        """Make `span` the current one (for what the handler sends); returns the token."""
        return self._context.attach(self._trace.set_span_in_context(span))

    def detach(self, token: object) -> None:
        self._context.detach(token)  # type: ignore[arg-type]

    def failed(self, span: Span, error: BaseException) -> None:
        span.record_exception(error)
        span.set_status(self._status(self._code.ERROR, f"{type(error).__name__}: {error}"))

    @contextmanager
    def publishing(self, message: Message) -> Iterator[Message]:
        """A send to the broker: yields the message to send, naming this span as its parent."""
        span = self._start(
            f"publish {message.target}",
            self._kind.PRODUCER,
            message.metadata.get(TRACEPARENT),
            message.trace_id,
            {"messaging.message.id": message.id, "messaging.destination.name": message.target},
        )
        # `_running(span, current=False)` inlined: every message sent to the broker comes here.
        try:
            yield self.stamped(message, span)
        except BaseException as exc:
            self.failed(span, exc)
            raise
        finally:
            span.end()

    @contextmanager
    def asking(self, target: str, message: Message) -> Iterator[None]:
        """An ask, from the send to the reply (or its timeout), as the current span."""
        with self._root(message.trace_id):
            span = self.start_span(
                f"ask {target}",
                None,  # the current span's child
                self._kind.CLIENT,
                {"messaging.message.id": message.id, "mas.ask.target": target},
            )
        with self._running(span, current=True):
            yield

    @contextmanager
    def serving(
        self, method: str, path: str, traceparent: str | None, trace_id: str
    ) -> Iterator[Span]:
        """An HTTP request at the gateway, as the current span while the app answers it."""
        span = self._start(
            method,
            self._kind.SERVER,
            traceparent,
            trace_id,
            {"http.request.method": method, "url.path": path},
        )
        with self._running(span, current=True):
            yield span

    @contextmanager
    def committing(self, rows: int) -> Iterator[None]:
        """One journal commit (a batch of many messages' records: a trace of its own)."""
        span = self.start_span(
            "journal commit", self._context.Context(), self._kind.INTERNAL, {"mas.batch.rows": rows}
        )
        with self._running(span, current=False):
            yield

    @contextmanager
    def _running(self, span: Span, *, current: bool) -> Iterator[None]:
        """Until the block ends: `span` (the current one, if `current`), marked failed by
        an error that leaves the block, then ended."""
        token = self.attach(span) if current else None
        try:
            yield
        except BaseException as exc:
            self.failed(span, exc)
            raise
        finally:
            if token is not None:
                self.detach(token)
            span.end()

    # -- what a message carries --------------------------------------------------------------

    def stamp(self, message: Message) -> Message:
        """`message` naming the current span as its parent (a copy when it has to change)."""
        return self.stamped(message, self._trace.get_current_span())

    def stamped(self, message: Message, span: Span) -> Message:
        traceparent = traceparent_of(span)
        if traceparent is None or message.metadata.get(TRACEPARENT) == traceparent:
            return message
        copy = message.copy()
        copy.metadata = {**message.metadata, TRACEPARENT: traceparent}
        if copy.trace_id is None:
            copy.trace_id = traceparent[3:35]
        return copy
