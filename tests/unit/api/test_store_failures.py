"""A database that does not answer: the client hears so within MAS_API__WRITE_TIMEOUT, and
the answer says what failed without the SQL, its parameters or the payload's values.

The lock is real: another connection holds SQLite's write lock on the gateway's database
file, as a long migration or a stuck batch job would.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from tests.unit.api.conftest import TokenFactory

pytestmark = pytest.mark.anyio

SECRET_VALUE = "hunter2-do-not-show"
WRITE_TIMEOUT = 0.5
DATABASE_TIMEOUT = 6.0  # each database call may wait this long; the request may not


@pytest.fixture
def locked(tmp_path: Path) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """`with locked():` another connection holds the database's write lock."""

    @contextlib.contextmanager
    def hold() -> Iterator[None]:
        other = sqlite3.connect(tmp_path / "mas.db", isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()

    return hold


@pytest.mark.parametrize("keyed", [False, True], ids=["new-id", "idempotency-key"])
async def test_a_locked_database_is_a_prompt_503_without_sql_or_payload(
    make_app: Callable[..., FastAPI],
    serve: Callable[[FastAPI], Any],
    token: TokenFactory,
    locked: Callable[[], contextlib.AbstractContextManager[None]],
    problem: Callable[..., dict[str, Any]],
    keyed: bool,
) -> None:
    app = make_app(api={"write_timeout": WRITE_TIMEOUT}, database_timeout=DATABASE_TIMEOUT)
    headers = token() | ({"Idempotency-Key": "locked-1"} if keyed else {})
    body = {"type": "echo", "payload": {"password": SECRET_VALUE}}
    async with serve(app) as client:
        with locked():
            started = time.monotonic()
            response = await client.post("/tasks/", json=body, headers=headers)
            waited = time.monotonic() - started
        refused = problem(response, 503)
        assert response.headers["Retry-After"]
        assert waited < DATABASE_TIMEOUT / 2, f"the client waited {waited:.1f}s"
        for leak in ("INSERT", "SQL", "parameters", SECRET_VALUE):
            assert leak not in response.text, refused
        # Once the lock is gone, the same request goes through (a retry is safe).
        retried = await client.post("/tasks/", json=body, headers=headers)
        assert retried.status_code in (200, 201, 202), retried.text
