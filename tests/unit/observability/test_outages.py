"""Outage: one line when a service stops answering, one when it answers again — not one per
failed call (a hot path hitting a dead service would bury the log)."""

from __future__ import annotations

from structlog.testing import capture_logs

from mas.observability.outages import Outage


def test_an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() -> None:
    outage = Outage("database", "store")
    with capture_logs() as logs:
        outage.ok()  # healthy: nothing to say
        for _ in range(100):
            outage.failed("reading from", TimeoutError("no answer"))
        assert outage.down
        outage.ok()
        outage.ok()
        outage.failed("writing to", ConnectionRefusedError("refused"))
        outage.ok()
    assert [(e["event"], e["component"]) for e in logs] == [
        ("database_unavailable", "store"),
        ("database_recovered", "store"),
        ("database_unavailable", "store"),
        ("database_recovered", "store"),
    ]
    first_end = logs[1]
    assert first_end["failures"] == 100
    assert first_end["duration"] >= 0
    assert (logs[0]["operation"], logs[0]["error_type"]) == ("reading from", "TimeoutError")
    assert not outage.down


def test_a_cooldown_skips_calls_after_a_failure_and_lets_one_probe_after_it() -> None:
    outage = Outage("redis", "dedupe", cooldown=60)
    assert not outage.skip()
    outage.failed("claim", ConnectionError("down"))
    assert outage.skip()  # within the cooldown: answer "unknown" at once
    outage.ok()
    assert not outage.skip()
