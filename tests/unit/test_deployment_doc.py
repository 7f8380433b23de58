"""docs/deployment.md names settings, metrics and log events an operator will type into
their tools: each must exist, or the page sends them after something mas does not have."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.echo import EchoAgent
from mas.monitoring.metrics import RuntimeMetrics
from mas.runtime import Runtime
from tests.unit.test_compose import settings_field_error

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "deployment.md").read_text()


def test_every_setting_the_page_names_is_a_real_setting() -> None:
    named = set(re.findall(r"\bMAS_[A-Z0-9_]*[A-Z0-9]\b", PAGE))
    assert len(named) > 15
    assert [error for name in sorted(named) if (error := settings_field_error(name))] == []


@pytest.mark.anyio
async def test_every_metric_the_page_queries_is_exported() -> None:
    async with Runtime() as runtime:
        await runtime.spawn(EchoAgent)
        exposition = (await RuntimeMetrics(runtime).render()).decode()
    exported = set()
    for family in text_string_to_metric_families(exposition):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        exported |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    queried = set(re.findall(r"\b(?:agent|mas)_[a-z_]+(?:_total|_bucket|_messages)\b", PAGE))
    assert len(queried) >= 6
    assert queried - exported == set()


def test_every_log_event_the_page_names_is_logged() -> None:
    [line] = [line for line in PAGE.split("\n\n") if line.startswith("**Logs.**")]
    events = re.findall(r"`([a-z_]+)`", line)
    assert len(events) >= 4
    source = "\n".join(path.read_text() for path in (ROOT / "mas").rglob("*.py"))
    assert [event for event in events if f'"{event}"' not in source] == []
