"""The batch writer's own SQL path (mas/persistence/batch_sql.py) and SQLite's fast task read.

Both skip SQLAlchemy's per-row processing for speed, so each copies something of
SQLAlchemy's: the order of a statement's parameters, the text SQLite timestamps are stored
as, the columns of `tasks` in order. These tests break when one of those changes, instead
of letting a batch write values in the wrong columns or a read mis-decode them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

from mas.persistence import Store
from mas.persistence.batch_sql import DriverStatement, _json_text, _same, _sqlite_timestamp
from mas.persistence.models import tasks
from mas.persistence.store import Batch, _task

pytestmark = pytest.mark.anyio


def _upper(value: Any) -> Any:
    return str(value).upper()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        # Plain keys, an encoded key and constants, interleaved as a compiled statement has them.
        (
            (
                ("a", _same, None),
                ("k", None, "const"),
                ("b", _upper, None),
                ("c", _json_text, None),
            ),
            (1, "const", "TWO", '{"x":[1,2]}'),
        ),
        ((("b", _upper, None),), ("TWO",)),  # one parameter: still a tuple
        ((("a", _same, None),), (1,)),
        ((("k", None, "only"), ("j", None, 7)), ("only", 7)),  # constants alone
        ((("c", _json_text, None), ("a", _same, None)), ('{"x":[1,2]}', 1)),
    ],
)
def test_each_parameter_lands_in_its_place(
    params: tuple[tuple[str, Any, Any], ...], expected: tuple[Any, ...]
) -> None:
    statement = DriverStatement("SQL", params)
    row = {"a": 1, "b": "two", "c": {"x": [1, 2]}, "unused": object()}
    assert statement.parameters([row, row]) == [expected, expected]


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 11, 29, 22, 37, 13, 73414, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-7))),
    ],
)
def test_sqlite_timestamps_are_the_text_sqlalchemy_writes(value: datetime) -> None:
    """Rows the batch writes and rows SQLAlchemy writes must sort and compare as one."""
    naive_utc = value.astimezone(UTC).replace(tzinfo=None)
    sqlalchemys = sqlite.DATETIME().bind_processor(sqlite.dialect())
    assert sqlalchemys is not None
    assert _sqlite_timestamp(value) == sqlalchemys(naive_utc)


async def test_the_fast_sqlite_read_of_a_task_is_sqlalchemys_read(store: Store) -> None:
    """Every column written by the batch path reads back the same through SQLite's
    positional fast path as through SQLAlchemy (on PostgreSQL both are SQLAlchemy's)."""
    started = datetime(2026, 11, 29, 12, 0, 0, 1, tzinfo=UTC)
    row = {
        "id": "t-1",
        "type": "echo",
        "status": "running",
        "target": "type:echo",
        "payload": {"text": "hi", "nested": {"n": [1, 2.5, None, True]}},
        "result": None,
        "error": None,
        "attempts": 2,
        "created_by": "alice",
        "trace_id": "trace-1",
        "created_at": started,
        "started_at": started,
        "finished_at": None,
    }
    finished = {
        "task_id": "t-1",
        "status": "failed",
        "result": {"partial": "é"},
        "error": {"type": "Boom", "message": "no", "retryable": False},
        "attempts": 2,
        "finished_at": started + timedelta(seconds=1, microseconds=5),
    }
    await store.apply(Batch(created=[row]))
    await store.apply(Batch(finished=[finished]))
    fast = await store.get_task("t-1")
    async with store.reading() as conn:
        slow = _task((await conn.execute(select(tasks).where(tasks.c.id == "t-1"))).one())
    assert fast == slow
    assert fast is not None
    assert (fast.status, fast.result, fast.error) == (
        "failed",
        finished["result"],
        finished["error"],
    )
    assert (fast.created_at, fast.finished_at) == (started, finished["finished_at"])
    assert (fast.created_by, fast.trace_id, fast.payload) == ("alice", "trace-1", row["payload"])
