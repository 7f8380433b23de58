"""Structured logs: JSON lines carrying the ids that let you follow one message."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from mas import Agent, HandlerResult, Message, Runtime, Settings
from mas.agents.echo import EchoAgent
from mas.testing import TestRuntime, crashing

pytestmark = pytest.mark.anyio


def parse(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


async def test_each_handled_message_is_logged_with_ids_duration_and_status(
    log_lines: io.StringIO,
) -> None:
    class Quiet(Agent):
        async def handle_message(self, message: Message) -> HandlerResult:
            self.ctx.log.info("custom_event", step=1)
            return None

    async with TestRuntime(log_level="DEBUG") as rt:
        await rt.spawn(Quiet, id="q")
        await rt.tell("agent:q", Message("job", trace_id="trace-1", id="m-1"))
        await rt.settle()
    records = parse(log_lines)
    handled = [r for r in records if r["event"] == "message_handled"]
    assert len(handled) == 1
    record = handled[0]
    assert record["agent_id"] == "q"
    assert record["message_id"] == "m-1"
    assert record["trace_id"] == "trace-1"
    assert record["status"] == "succeeded"
    assert isinstance(record["duration"], float)
    custom = next(r for r in records if r["event"] == "custom_event")
    assert (custom["agent_id"], custom["message_id"], custom["trace_id"]) == ("q", "m-1", "trace-1")


async def test_failures_and_dead_letters_are_logged_with_the_same_trace(
    log_lines: io.StringIO,
) -> None:
    factory, _ = crashing(99)
    async with TestRuntime(log_level="DEBUG", retry={"max_attempts": 2}) as rt:
        await rt.spawn(factory, id="c")
        await rt.tell("agent:c", Message("job", trace_id="t-9"))
        await rt.settle()
    records = parse(log_lines)
    failed = [r for r in records if r["event"] == "handler_failed"]
    assert [r["attempt"] for r in failed] == [1, 2]
    assert {r["trace_id"] for r in failed} == {"t-9"}
    dead = next(r for r in records if r["event"] == "message_dead_lettered")
    assert (dead["reason"], dead["trace_id"], dead["attempts"]) == ("max_attempts", "t-9", 2)
    assert all("payload" not in r for r in records)  # payloads never go to the logs


def test_standard_logging_records_are_one_json_line_with_the_traceback(
    log_lines: io.StringIO,
) -> None:
    """uvicorn and asyncio log through `logging`: a traceback must not break the stream."""
    import logging

    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    logging.getLogger("some.library").info("chatter below WARNING is not shown")
    (record,) = parse(log_lines)
    assert record["event"] == "Exception in ASGI application"
    assert (record["level"], record["logger"]) == ("error", "uvicorn.error")
    assert "ValueError: broken" in record["exception"]
    assert "Traceback" in record["exception"]


async def test_a_runtime_leaves_the_applications_logging_as_it_was() -> None:
    # An embedded runtime must not take over its host's logging: configuring it is the job
    # of the application (or of the `mas` commands, which are applications).
    saved = structlog.get_config()
    structlog.reset_defaults()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        async with Runtime(Settings(log_level="DEBUG")) as rt:
            ref = await rt.spawn(EchoAgent, id="echo")
            await ref.ask(Message("ping", {"n": 1}), timeout=1)
        assert not structlog.is_configured()
        assert root.handlers == handlers
        assert root.level == level
    finally:
        structlog.configure(**saved)


def test_a_logger_used_once_follows_a_later_configure_logging() -> None:
    """Loggers are cached on first use, yet a later call still sets their level and stream."""
    from mas.observability import configure_logging, reset_logging

    log = structlog.get_logger("mas.test.cached")
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_logging("INFO", "json", first)
        log.info("to_the_first")
        configure_logging("WARNING", "json", second)
        log.info("below_the_level")
        log.warning("to_the_second", n=2)
    finally:
        reset_logging()
    assert [r["event"] for r in parse(first)] == ["to_the_first"]
    assert [(r["event"], r["n"], r["level"]) for r in parse(second)] == [
        ("to_the_second", 2, "warning")
    ]


def test_capture_logs_reaches_loggers_mas_already_used() -> None:
    """structlog's test helper changes the configured processors in place: a logger cached
    before it still reports to it, after configure_logging and after reset_logging."""
    from mas.observability import configure_logging, reset_logging

    log = structlog.get_logger("mas.test.captured")
    try:
        configure_logging("DEBUG", "json", io.StringIO())
        log.info("cached_now")
        with structlog.testing.capture_logs() as captured:
            log.warning("seen", n=1)
    finally:
        reset_logging()
    with structlog.testing.capture_logs() as after_reset:
        log.info("seen_after_reset")
    assert [(e["event"], e["n"]) for e in captured] == [("seen", 1)]
    assert [e["event"] for e in after_reset] == ["seen_after_reset"]
