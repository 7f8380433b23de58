"""The 60-second chaos soak (issue 12): the gateway and 3 workers on the real services.

Tasks go in over HTTP at 20 per second while every kind of fault strikes once (workers and
the gateway killed with -9 and stopped with SIGTERM, the broker cut and blackholed,
PostgreSQL refused and blackholed, Redis refused); then the checker reads the database.
The verdict must hold: nothing the gateway accepted lost, no task left pending, no handler
effect repeated except in the kill -9 window (tests/soak/checker.py defines each term).
The harness is tests/soak/harness.py; `benchmarks/chaos.py` runs it for longer.

It takes 2-4 minutes: about 60 s of load (more when restarts are slow, as each fault waits
for the system to recover from the previous one), start-up, the quiet period and clean-up.
The process logs and the JSON report stay in the test's tmp_path.
"""

from __future__ import annotations

import json
from pathlib import Path

import aio_pika
import anyio
import asyncpg
import pytest
from aio_pika.exceptions import AMQPError

from tests.amqp_support import AMQP_URL
from tests.conftest import require_service
from tests.integration.pg_support import postgres_dsn
from tests.redis_support import reachable_redis
from tests.soak.harness import SoakConfig, render, run_soak

pytestmark = pytest.mark.anyio

OVERALL_LIMIT = 900.0  # seconds; the run is bounded inside too, this only stops a hang


async def require_services() -> None:
    """Skip (or, in CI, fail) unless RabbitMQ, PostgreSQL and Redis answer."""
    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=5)
        await connection.close()
    except (OSError, TimeoutError, AMQPError) as exc:
        require_service("RabbitMQ", False, repr(exc))
    try:
        admin = await asyncpg.connect(postgres_dsn(), timeout=5)
        await admin.close()
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        require_service("PostgreSQL", False, repr(exc))
    await (await reachable_redis()).aclose()


async def test_nothing_accepted_is_lost_or_done_twice_under_chaos(tmp_path: Path) -> None:
    await require_services()
    config = SoakConfig(load_seconds=60.0, logdir=tmp_path / "logs", quiet_deadline=90.0)
    with anyio.fail_after(OVERALL_LIMIT):
        report = await run_soak(config)
    (tmp_path / "chaos.json").write_text(json.dumps(report, indent=2))
    summary = render(report)
    print(summary)
    assert report["verdict"]["passed"], f"{summary}\n\nreport and logs: {tmp_path}"
