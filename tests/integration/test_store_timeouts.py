"""Every wait on the database is bounded, and a wait that runs out is the server's trouble.

A table locked by someone else (a long migration, a stuck transaction) makes every statement
that touches it wait. The gateway must answer within `MAS_DATABASE_TIMEOUT` with a 504
problem the client may retry and keep `/readyz` under a second — not hang for as long as the
lock lasts. A network partition (a TCP proxy that forwards nothing) must cost no more.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from mas.api.app import create_app
from mas.api.auth import SCOPES, mint_token
from mas.config import AuthSettings, Settings
from mas.errors import StoreTimeout
from mas.persistence import Store
from tests.fault_proxy import fault_proxy
from tests.integration.pg_support import PgSchema, admin_connection

pytestmark = pytest.mark.anyio

SECRET = "t" * 40
# Minted at import, so it must outlive the whole session (a loaded CI run passed 10 minutes).
HEADERS = {"Authorization": f"Bearer {mint_token(SECRET, 'tester', sorted(SCOPES), ttl=86_400)}"}
TIMEOUT = 1.0


@pytest.fixture
async def store(pg_schema: PgSchema) -> AsyncIterator[Store]:
    opened = await Store.open(pg_schema.url, schema=pg_schema.schema, migrate=True, timeout=TIMEOUT)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_statement_that_waits_too_long_is_a_store_timeout(
    store: Store, pg_schema: PgSchema
) -> None:
    await store.create_task("t-1", "echo", {})
    admin = await admin_connection()
    try:
        async with admin.transaction():
            await admin.execute(f'LOCK TABLE "{pg_schema.schema}".tasks IN ACCESS EXCLUSIVE MODE')
            started = time.monotonic()
            with pytest.raises(StoreTimeout, match="no answer within 1s"):
                await store.get_task("t-1")
            assert time.monotonic() - started < TIMEOUT + 2
    finally:
        await admin.close()
    task = await store.get_task("t-1")  # the pool recovers: the next read works
    assert task is not None and task.status == "pending"


async def test_the_gateway_answers_504_within_the_timeout(
    pg_schema: PgSchema, store: Store
) -> None:
    settings = Settings(
        database_url=SecretStr(pg_schema.url),
        database_schema=pg_schema.schema,
        database_timeout=TIMEOUT,
        auth=AuthSettings(jwt_secret=SecretStr(SECRET)),
        log_level="WARNING",
    )
    app = create_app(settings)
    admin = await admin_connection()
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        try:
            async with admin.transaction():
                await admin.execute(
                    f'LOCK TABLE "{pg_schema.schema}".tasks IN ACCESS EXCLUSIVE MODE'
                )
                answers = []
                for path in ("/tasks/some-task", "/tasks/", "/tasks/some-task"):
                    started = time.monotonic()
                    response = await client.get(path, headers=HEADERS)
                    answers.append((response.status_code, time.monotonic() - started))
                    assert response.headers["content-type"] == "application/problem+json"
                    assert response.headers["retry-after"]
                    assert "no answer within 1s" in response.json()["detail"]
                started = time.monotonic()
                ready = await client.get("/readyz")
                ready_in = time.monotonic() - started
        finally:
            await admin.close()
        after = await client.get("/tasks/", headers=HEADERS)
    assert [status for status, _ in answers] == [504, 504, 504]
    assert max(took for _, took in answers) < TIMEOUT + 2
    assert ready.status_code == 200, ready.text  # SELECT 1 touches no locked table
    assert ready_in < 1.0
    assert after.status_code == 200, after.text


async def test_connections_pooled_before_a_partition_cost_no_more_than_the_timeout(
    pg_schema: PgSchema, store: Store
) -> None:
    """A partition leaves the pool's idle connections hanging: a read that meets one fails
    within the timeout and a readiness ping within its own bound, not 2 s later (SQLAlchemy
    closes a connection it gave up on politely, waiting up to 2 s for the silent peer)."""
    url = make_url(pg_schema.url)
    async with fault_proxy("postgres", url.host or "127.0.0.1", url.port or 5432) as proxy:
        behind = await Store.open(
            proxy.url(pg_schema.url), schema=pg_schema.schema, timeout=TIMEOUT
        )
        try:
            await asyncio.gather(*(behind.get_task("t-1") for _ in range(3)))  # pooled, idle
            proxy.blackhole()
            started = time.monotonic()
            with pytest.raises(StoreTimeout):
                await behind.ping(0.5)
            pinged = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(StoreTimeout):
                await behind.get_task("t-1")
            read = time.monotonic() - started
            proxy.restore()
            assert await behind.get_task("t-1") is None  # the pool recovers
        finally:
            proxy.restore()
            await behind.close()
    assert pinged < 0.5 + 0.3
    assert read < TIMEOUT + 0.5
