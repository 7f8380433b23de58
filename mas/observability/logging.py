"""structlog set-up: one JSON object per line, with the ids that let you follow a message.

Every handled message is logged (at DEBUG) with `agent_id`, `message_id`, `trace_id`,
`duration` and `status`; failures, restarts and dead letters are logged at WARNING and above
with the same ids. Log calls use fixed snake_case event names and never dump payloads.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

__all__ = ["configure_logging", "level_number", "reset_logging"]


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
    any processor runs. Records of the standard library's `logging` (uvicorn's "Exception in
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            timestamper,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(number),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
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
    _remove_standard_handler(logging.getLogger())


def _remove_standard_handler(root: logging.Logger) -> None:
    for handler in [h for h in root.handlers if isinstance(h, _StandardHandler)]:
        root.removeHandler(handler)
