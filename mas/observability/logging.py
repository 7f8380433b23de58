"""structlog set-up: one JSON object per line, with the ids that let you follow a message.

Every handled message is logged (at DEBUG) with `agent_id`, `message_id`, `trace_id`,
`duration` and `status`; failures, restarts and dead letters are logged at WARNING and above
with the same ids. Log calls use fixed snake_case event names and never dump payloads.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO, cast

import structlog

__all__ = ["configure_logging", "level_number", "reset_logging"]


class _Sink:
    """Where mas's lines go and from which level: what `configure_logging` sets. Loggers
    are cached on first use (binding one per call cost more than a crash's restart), so
    they read these at each call instead of keeping what was set when they were made."""

    __slots__ = ("level", "lock", "processors", "stream")

    def __init__(self) -> None:
        self.level = logging.INFO
        self.stream: TextIO = sys.stderr
        self.lock = threading.Lock()
        # Handed to structlog once and changed in place: cached loggers hold this list.
        self.processors: list[structlog.typing.Processor] = []


_SINK = _Sink()


class _Lines:
    """structlog's logger at the end of the chain: writes each rendered line to the sink's
    stream of the moment (structlog's PrintLogger, but following `configure_logging`)."""

    __slots__ = ()

    def msg(self, message: str) -> None:
        with _SINK.lock:
            _SINK.stream.write(message + "\n")
            _SINK.stream.flush()

    debug = info = warn = warning = error = critical = exception = fatal = failure = log = msg


_LINES = _Lines()


def _lines(*args: Any) -> _Lines:
    """structlog's logger factory: the one stateless `_Lines` for every logger."""
    return _LINES


def _interpolated(event: str | None, args: tuple[Any, ...]) -> str | None:
    return event % args if args and event is not None else event


def _level_methods(number: int, name: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def method(self: Any, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if number < _SINK.level:
            return None  # below the level: one comparison, nothing rendered
        return self._proxy_to_logger(name, _interpolated(event, args), **kw)

    async def amethod(self: Any, event: str | None = None, *args: Any, **kw: Any) -> Any:
        return method(self, event, *args, **kw)

    return method, amethod


def _filtering_logger_class() -> type[structlog.typing.FilteringBoundLogger]:
    """structlog's filtering bound logger, with the level read at each call (the sink's)."""
    methods: dict[str, Any] = {}
    names = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
    for name, number in names.items():
        methods[name], methods[f"a{name}"] = _level_methods(number, name)
    methods["warn"], methods["awarn"] = methods["warning"], methods["awarning"]
    methods["fatal"], methods["afatal"] = methods["critical"], methods["acritical"]
    methods["msg"], methods["amsg"] = methods["info"], methods["ainfo"]
    error, aerror = methods["error"], methods["aerror"]

    def exception(self: Any, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return error(self, event, *args, **kw)

    async def aexception(self: Any, event: str | None = None, *args: Any, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return await aerror(self, event, *args, **kw)

    def log(self: Any, level: int, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if level < _SINK.level:
            return None
        name = logging.getLevelName(level).lower()
        return self._proxy_to_logger(name, _interpolated(event, args), **kw)

    async def alog(self: Any, level: int, event: str | None = None, *a: Any, **kw: Any) -> Any:
        return log(self, level, event, *a, **kw)

    methods |= {"exception": exception, "aexception": aexception, "log": log, "alog": alog}
    methods["is_enabled_for"] = lambda self, level: level >= _SINK.level
    methods["get_effective_level"] = lambda self: _SINK.level
    built = type("MasBoundLogger", (structlog.BoundLoggerBase,), methods)
    return cast("type[structlog.typing.FilteringBoundLogger]", built)


_LOGGER_CLASS = _filtering_logger_class()


def level_number(level: str | int) -> int:
    """`"INFO"` -> 20; raises ValueError naming the accepted names."""
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    return number


def configure_logging(
    level: str | int = "INFO", fmt: str = "json", stream: TextIO | None = None
) -> None:
    """Configure structlog globally: JSON (or console) lines on `stream` (stderr by default).

    Messages below `level` cost one integer comparison: the filtering logger drops them before
    any processor runs. Loggers are cached on first use (structlog's
    `cache_logger_on_first_use`) and still follow a later call of this function (level,
    format, stream); a `structlog.configure` of your own after mas logged does not reach the
    loggers already used. Records of the standard library's `logging` (uvicorn's "Exception in
    ASGI application", asyncio's "Task exception was never retrieved", libraries' warnings)
    go through the same renderer: one line each, the traceback in its `exception` field, so
    a multi-line traceback never breaks a JSON log stream.
    """
    number = level_number(level)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    out = stream if stream is not None else sys.stderr
    with _SINK.lock:
        _SINK.level, _SINK.stream = number, out
        _SINK.processors[:] = [
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ]
    structlog.configure(
        processors=_SINK.processors,
        wrapper_class=_LOGGER_CLASS,
        logger_factory=_lines,
        cache_logger_on_first_use=True,
    )
    _route_standard_logging(out, number, timestamper, renderer)


class _StandardHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler `configure_logging` installs (and replaces when called again)."""


def _route_standard_logging(
    stream: TextIO,
    level: int,
    timestamper: structlog.typing.Processor,
    renderer: structlog.typing.Processor,
) -> None:
    handler = _StandardHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.stdlib.add_logger_name,
                timestamper,
                structlog.processors.format_exc_info,
            ],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    _remove_standard_handler(root)
    root.addHandler(handler)
    # Libraries speak at WARNING and above: their INFO and DEBUG (every AMQP frame, every
    # SQL statement) would drown mas's own lines.
    root.setLevel(max(level, logging.WARNING))


def reset_logging() -> None:
    """Undo `configure_logging`: structlog's defaults, and no handler of ours on the root
    logger (one left behind would keep writing to a stream its owner has closed)."""
    structlog.reset_defaults()
    with _SINK.lock:  # loggers cached meanwhile write as structlog's defaults would
        _SINK.level, _SINK.stream = logging.NOTSET, sys.stdout
        _SINK.processors[:] = structlog.get_config()["processors"]
    # The defaults, in the list cached loggers hold: `structlog.testing.capture_logs`
    # changes the configured list in place, and so reaches them too.
    structlog.configure(processors=_SINK.processors)
    _remove_standard_handler(logging.getLogger())


def _remove_standard_handler(root: logging.Logger) -> None:
    for handler in [h for h in root.handlers if isinstance(h, _StandardHandler)]:
        root.removeHandler(handler)
