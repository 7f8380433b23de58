"""Task responses are written straight from the record: they must be what `TaskOut` says."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from mas.api.schemas import TaskOut
from mas.persistence.store import TaskRecord

NEW = TaskRecord.new("t-1", "echo", {"text": "é ✓", "n": [1, 2.5, None]}, target="type:echo")
NOW = datetime.now(UTC)


@pytest.mark.parametrize(
    "task",
    [
        NEW,
        dataclasses.replace(
            NEW,
            status="succeeded",
            result={"deep": {"list": [True, False]}},
            attempts=2,
            created_by="me",
            trace_id="0af7651916cd43dd8448eb211c80319c",
            started_at=NOW,
            finished_at=NOW + timedelta(microseconds=1),
        ),
        dataclasses.replace(NEW, status="dead_lettered", error={"type": "X", "retryable": False}),
        dataclasses.replace(NEW, status="succeeded", result="just a string"),
    ],
    ids=["pending", "succeeded", "dead_lettered", "scalar result"],
)
def test_the_json_written_from_a_record_is_the_task_out_json(task: TaskRecord) -> None:
    assert TaskOut.json_of(task) == TaskOut.of(task).model_dump_json().encode()
    assert TaskOut.model_validate_json(TaskOut.json_of(task)) == TaskOut.of(task)
