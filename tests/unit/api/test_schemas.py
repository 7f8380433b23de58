"""Task responses are written straight from the record: they must be what `TaskOut` says."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest

from mas.api.schemas import TaskList, TaskOut
from mas.persistence.store import TaskRecord

NEW = TaskRecord.new("t-1", "echo", {"text": "é ✓", "n": [1, 2.5, None]}, target="type:echo")
NOW = datetime.now(UTC)


def nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


RECORDS = {
    "pending": NEW,
    "no target, creator or trace": dataclasses.replace(
        NEW, target=None, created_by=None, trace_id=None, payload={}
    ),
    "succeeded": dataclasses.replace(
        NEW,
        status="succeeded",
        result={"deep": {"list": [True, False]}, "text": "日本語 \u2028 \x00"},
        attempts=2,
        created_by="me",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        started_at=NOW,
        finished_at=NOW + timedelta(microseconds=1),
    ),
    "failed": dataclasses.replace(
        NEW,
        status="failed",
        error={"type": "RuntimeError", "message": "boom ✗", "retryable": False},
        attempts=3,
        finished_at=NOW,
    ),
    "dead_lettered": dataclasses.replace(
        NEW, status="dead_lettered", error={"type": "X", "retryable": False}
    ),
    "scalar result": dataclasses.replace(NEW, status="succeeded", result="just a string"),
    "naive timestamps": dataclasses.replace(
        NEW, created_at=datetime(2026, 1, 2, 3, 4, 5, 6), started_at=datetime(2026, 1, 2)
    ),
    # Stored before the nesting rule: shown as a note, however deep (pydantic stops at 255).
    "nested too deep": dataclasses.replace(NEW, payload=nested(210)),
    "nested beyond writing": dataclasses.replace(NEW, status="succeeded", result=nested(300)),
}


@pytest.mark.parametrize("task", RECORDS.values(), ids=RECORDS.keys())
def test_the_json_written_from_a_record_is_the_task_out_json(task: TaskRecord) -> None:
    assert json.loads(TaskOut.json_of(task)) == TaskOut.of(task).model_dump(mode="json")
    assert TaskOut.json_of(task) == TaskOut.of(task).model_dump_json().encode()
    assert TaskOut.model_validate_json(TaskOut.json_of(task)) == TaskOut.of(task)


def test_the_json_has_task_outs_fields_in_their_order() -> None:
    written = json.loads(TaskOut.json_of(RECORDS["succeeded"]))
    assert list(written) == list(TaskOut.model_fields)


def test_a_list_is_task_out_json_items_in_a_task_list() -> None:
    tasks = list(RECORDS.values())
    written = json.loads(TaskList.json_of(tasks, 50, 10))
    assert list(written) == list(TaskList.model_fields)
    expected = TaskList(items=[TaskOut.of(t) for t in tasks], limit=50, offset=10)
    assert written == expected.model_dump(mode="json")
    assert [list(item) for item in written["items"]] == [list(TaskOut.model_fields)] * len(tasks)
    assert TaskList.model_validate_json(TaskList.json_of(tasks, 50, 10)) == expected


def test_an_empty_list_is_a_task_list() -> None:
    assert json.loads(TaskList.json_of([], 1, 0)) == {"items": [], "limit": 1, "offset": 0}
