"""The journal's batch as driver SQL: statements compiled once, rows turned into parameters.

A batch is written with one `executemany` per kind of row, in the driver's own SQL and
parameter style. SQLAlchemy builds and compiles each statement once (per set of row keys);
executing through the driver skips its per-row parameter processing and, on SQLite, the
several hops to aiosqlite's thread that each SQLAlchemy statement costs — on a busy event
loop, each hop waits for a turn of the loop, and a batch commit was a dozen of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, DateTime, Table, and_, bindparam, delete, func, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from mas.persistence.models import (
    agents,
    dead_letters,
    messages,
    outbox,
    processed,
    tasks,
    workflow_steps,
)

if TYPE_CHECKING:
    from sqlalchemy.sql.dml import UpdateBase

    from mas.persistence.store import Batch

__all__ = ["BatchStatements", "DriverStatement", "encoder_for", "wake_upsert"]


Encoder = Callable[[Any], Any]


# Built once: `json.dumps` with options builds a new encoder on every call.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json_text(value: Any) -> str:
    # Most JSON cells of a task are empty (no error yet, no metadata): skip the encoder.
    if value is None:
        return "null"
    if not value and isinstance(value, dict):
        return "{}"
    return _encode_json(value)


def _sqlite_timestamp(value: datetime | None) -> str | None:
    # The format SQLAlchemy's SQLite DateTime reads back (UTC, without an offset);
    # isoformat is several times cheaper than strftime and writes the same text.
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.isoformat(" ", "microseconds")[:26]  # without "+00:00"


def _same(value: Any) -> Any:
    return value


def encoder_for(column_type: Any, dialect: str) -> Encoder:
    """How a value of this column type goes to the driver (what SQLAlchemy would do)."""
    if isinstance(column_type, JSON) or isinstance(getattr(column_type, "impl", None), JSON):
        return _json_text
    if isinstance(column_type, DateTime) and dialect == "sqlite":
        return _sqlite_timestamp
    return _same


@dataclass(frozen=True, slots=True)
class DriverStatement:
    """One compiled statement, and for each of its positional parameters where it comes from:
    a row key with its encoder, or a constant of the statement (encoder None)."""

    sql: str
    params: tuple[tuple[str, Encoder | None, Any], ...]
    values: Callable[[dict[str, Any]], tuple[Any, ...]] = field(init=False)
    """A row's parameters, in order (see `_values_function`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _values_function(self.params))

    def parameters(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return list(map(self.values, rows))


def _values_function(
    params: tuple[tuple[str, Encoder | None, Any], ...],
) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's parameters in the statement's order: `(encode_0(row["id"]), row["type"],
    constant_2, ...)`, planned once per statement.

    Every row of every batch goes through it, a dozen values each: one `itemgetter` fetches
    them all in C, then only the positions that need it are patched (the statement's
    constants, and the values an encoder turns into what the driver takes).
    """
    keys = [key for key, encode, _ in params if encode is not None]
    if not keys:
        constants = tuple(constant for _, _, constant in params)
        return lambda row: constants
    # A constant's position fetches any key: it is overwritten below.
    get = itemgetter(*[key if encode is not None else keys[0] for key, encode, _ in params])
    fixed = tuple((i, constant) for i, (_, encode, constant) in enumerate(params) if encode is None)
    encoded = tuple(
        (i, encode) for i, (_, encode, _) in enumerate(params) if encode not in (None, _same)
    )
    if len(params) == 1:  # itemgetter of one key returns the value, not a tuple
        only = params[0][1] or _same
        return lambda row: (only(get(row)),)

    def values(row: dict[str, Any]) -> tuple[Any, ...]:
        out = list(get(row))
        for i, constant in fixed:
            out[i] = constant
        for i, encode in encoded:
            out[i] = encode(out[i])
        return tuple(out)

    return values


class BatchStatements:
    """The statements a `Batch` needs, compiled for one dialect and cached by row keys."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._cache: dict[tuple[str, tuple[str, ...]], DriverStatement] = {}
        insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
        stmt = insert(agents)
        upsert_agents = stmt.on_conflict_do_update(
            index_elements=[agents.c.id],
            set_={
                "type": stmt.excluded.type,
                "status": stmt.excluded.status,
                "node_id": stmt.excluded.node_id,
                "last_heartbeat": stmt.excluded.last_heartbeat,
                "metadata": stmt.excluded.metadata,
            },
        )
        stmt = insert(tasks)
        # A late "running" never overwrites a final status, and the first start counts.
        upsert_running = stmt.on_conflict_do_update(
            index_elements=[tasks.c.id],
            set_={
                "status": "running",
                "attempts": stmt.excluded.attempts,
                "started_at": func.coalesce(tasks.c.started_at, stmt.excluded.started_at),
                "target": func.coalesce(tasks.c.target, stmt.excluded.target),
                "trace_id": func.coalesce(tasks.c.trace_id, stmt.excluded.trace_id),
            },
            # Plain comparisons: an IN list cannot be used with executemany.
            where=or_(tasks.c.status == "pending", tasks.c.status == "running"),
        )
        finish = (
            update(tasks)
            .where(tasks.c.id == bindparam("task_id"))
            .where(
                and_(
                    tasks.c.status != "succeeded",
                    tasks.c.status != "cancelled",
                    tasks.c.status != "timed_out",
                    tasks.c.status != "budget_exceeded",
                )
            )
            .values(
                status=bindparam("status"),
                result=bindparam("result"),
                error=bindparam("error"),
                attempts=bindparam("attempts"),
                finished_at=bindparam("finished_at"),
            )
        )
        # A child task whose handler returned no TaskResult: done, unless it ended already
        # (its handler's own TaskResult, a cancel, a dead letter).
        complete = (
            update(tasks)
            .where(tasks.c.id == bindparam("task_id"))
            .where(or_(tasks.c.status == "pending", tasks.c.status == "running"))
            .values(
                status="succeeded",
                result=bindparam("result"),
                finished_at=bindparam("finished_at"),
            )
        )
        # Batch kinds in the order they are applied (Batch's field order), with their table.
        self._kinds: dict[str, tuple[UpdateBase, Table]] = {
            "created": (insert(tasks).on_conflict_do_nothing(), tasks),
            "outbox": (insert(outbox).on_conflict_do_nothing(), outbox),
            "agents": (upsert_agents, agents),
            "messages": (insert(messages).on_conflict_do_nothing(), messages),
            # A step two nodes both finished (one took the message over): the first stays.
            "steps": (insert(workflow_steps).on_conflict_do_nothing(), workflow_steps),
            "processed": (insert(processed).on_conflict_do_nothing(), processed),
            # A message dead-lettered again (redelivered before its ack) stays one letter.
            "dead_letters": (insert(dead_letters).on_conflict_do_nothing(), dead_letters),
            "running": (upsert_running, tasks),
            "finished": (finish, tasks),
            "completed": (complete, tasks),
            "sent": (
                delete(outbox)
                .where(outbox.c.id == bindparam("id"))
                .where(outbox.c.owner == bindparam("owner")),
                outbox,
            ),
            "wakes": (wake_upsert(insert), outbox),
        }

    def for_batch(self, batch: Batch) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """(sql, parameter rows) per kind of row the batch holds, in the order to run them."""
        out = []
        for kind in self._kinds:
            kept = getattr(batch, kind)
            if not kept:
                continue
            keyed = kind in ("outbox", "wakes")
            rows: list[dict[str, Any]] = list(kept.values()) if keyed else kept
            if kind == "agents":  # one statement may not upsert the same key twice
                rows = list({row["id"]: row for row in rows}.values())
            elif kind == "running":
                rows = _latest_starts(rows)
            statement = self._statement(kind, tuple(rows[0]))
            out.append((statement.sql, statement.parameters(rows)))
        return out

    def _statement(self, kind: str, keys: tuple[str, ...]) -> DriverStatement:
        cached = self._cache.get((kind, keys))
        if cached is not None:
            return cached
        construct, table = self._kinds[kind]
        columns = table.columns
        compiled = construct.compile(
            dialect=self.dialect, column_keys=[key for key in keys if key in columns]
        )
        positions = compiled.positiontup
        assert positions is not None  # both drivers take positional parameters
        params: list[tuple[str, Encoder | None, Any]] = []
        for name in positions:
            if name in keys:
                column = columns.get("id" if name == "task_id" else name)
                encoder = (
                    encoder_for(column.type, self.dialect.name) if column is not None else _same
                )
                params.append((name, encoder, None))
            else:
                params.append((name, None, compiled.params[name]))
        statement = self._cache[(kind, keys)] = DriverStatement(compiled.string, tuple(params))
        return statement


def wake_upsert(insert: Callable[[Table], Any]) -> Any:
    """The insert of a parked handler's wake-up: it takes its message's outbox row over,
    whoever held it (`insert` is the dialect's, with ON CONFLICT)."""
    stmt = insert(outbox)
    return stmt.on_conflict_do_update(
        index_elements=[outbox.c.id],
        set_={
            "message": stmt.excluded.message,
            "owner": None,
            "available_at": stmt.excluded.available_at,
            "attempts": 0,
        },
    )


def _latest_starts(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One `running` row per task: the latest attempt, started when the first one did.

    One statement may not upsert the same key twice.
    """
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        first = latest.get(row["id"])
        latest[row["id"]] = row if first is None else {**row, "started_at": first["started_at"]}
    return list(latest.values())
