"""/livez, /readyz and /metrics: public by default, behind `metrics:read` when configured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from mas.api.auth import SCOPES
from mas.api.state import Gateway
from mas.config import AuthSettings
from tests.metrics_support import samples

pytestmark = pytest.mark.anyio

Problem = Callable[..., dict[str, Any]]


async def test_livez_needs_no_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/livez")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["x-trace-id"]


async def test_readyz_reports_its_checks(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "checks": {"runtime": "ok", "transport": "ok", "store": "ok"},
    }


async def test_readyz_is_503_with_the_reason_when_the_store_is_gone(
    client: httpx.AsyncClient, gw: Gateway
) -> None:
    real = gw.store.engine

    class Broken:
        def connect(self) -> Any:
            raise OSError("database is gone")

    gw.store.engine = Broken()  # type: ignore[assignment]
    try:
        response = await client.get("/readyz")
    finally:
        gw.store.engine = real
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"] == {
        "runtime": "ok",
        "transport": "ok",
        "store": "unreachable: OSError",
    }


async def test_metrics_count_handler_runs_by_agent_type(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]], gw: Gateway
) -> None:
    submitted = await client.post("/tasks/", json={"type": "echo"}, headers=token())
    done = await client.get(f"/tasks/{submitted.json()['id']}", params={"wait": 5}, headers=token())
    assert done.json()["status"] == "succeeded"
    await gw.runtime.settle()

    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    echo = (("agent_type", "echo"),)
    assert found["agent_tasks_processed_total"][(*echo, ("status", "succeeded"))] == 1
    assert found["agent_tasks_processed_total"][(*echo, ("status", "failed"))] == 0
    assert found["agent_task_duration_seconds_count"][(*echo, ("status", "succeeded"))] == 1
    assert (
        found["agent_task_duration_seconds_bucket"][
            (*echo, ("le", "+Inf"), ("status", "succeeded"))
        ]
        == 1
    )
    assert found["agent_task_duration_seconds_sum"][(*echo, ("status", "succeeded"))] > 0
    assert found["agent_tasks_in_queue"][echo] == 0
    assert found["mas_agents"][echo] == 1
    assert found["mas_broker_queue_messages"][echo] == 0  # the memory broker's type queue
    assert found["mas_task_latency_seconds_count"][(("status", "succeeded"),)] == 1
    for name in (
        "mas_message_retries_total",
        "mas_agent_restarts_total",
        "mas_duplicates_skipped_total",
        "mas_handler_dead_letters_total",
    ):
        assert found[name][echo] == 0, name


async def test_metrics_count_every_failed_attempt_and_the_dead_letter(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]], gw: Gateway
) -> None:
    body = {"agent": "trouble", "message_type": "boom"}
    submitted = await client.post("/tasks/", json=body, headers=token())
    await client.get(f"/tasks/{submitted.json()['id']}", params={"wait": 5}, headers=token())
    await gw.runtime.settle()
    found = samples((await client.get("/metrics")).text)
    trouble = (("agent_type", "trouble"),)
    failed = (*trouble, ("status", "failed"))
    # TroubleAgent.max_attempts = 2: two runs failed, one was retried, one dead-lettered.
    assert found["agent_tasks_processed_total"][failed] == 2
    assert found["agent_task_duration_seconds_count"][failed] == 2
    assert found["mas_message_retries_total"][trouble] == 1
    assert found["mas_handler_dead_letters_total"][trouble] == 1
    assert found["mas_agent_restarts_total"][trouble] == 2  # a crash restarts the agent
    assert found["mas_dead_letters_total"][(("reason", "max_attempts"),)] == 1
    assert found["mas_task_latency_seconds_count"][(("status", "failed"),)] == 1


class TestPrivate:
    @pytest.fixture
    async def private(self, make_app: Callable[..., Any], serve: Callable[..., Any]) -> Any:
        auth = AuthSettings(
            jwt_secret=SecretStr("x" * 40),  # the secret `token` signs with
            public_health=False,
            public_metrics=False,
        )
        async with serve(make_app(auth=auth)) as client:
            yield client

    @pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
    async def test_needs_a_token(
        self, private: httpx.AsyncClient, problem: Problem, path: str
    ) -> None:
        problem(await private.get(path), 401, "Authorization")

    @pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
    async def test_needs_metrics_read(
        self, private: httpx.AsyncClient, token: Any, problem: Problem, path: str
    ) -> None:
        others = [s for s in SCOPES if s != "metrics:read"]
        problem(await private.get(path, headers=token(*others)), 403, "metrics:read")

    @pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
    async def test_admits_metrics_read(
        self, private: httpx.AsyncClient, token: Any, path: str
    ) -> None:
        assert (await private.get(path, headers=token("metrics:read"))).status_code == 200
