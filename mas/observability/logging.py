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

__all__ = ["configure_logging", "level_number"]


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
    any processor runs.
    """
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number(level)),
        logger_factory=structlog.PrintLoggerFactory(stream if stream is not None else sys.stderr),
        cache_logger_on_first_use=False,
    )
