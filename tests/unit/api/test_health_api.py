"""/livez, /readyz and /metrics: public by default, behind `metrics:read` when configured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from mas.api.auth import SCOPES
from mas.api.state import Gateway
from mas.config import AuthSettings

pytestmark = pytest.mark.anyio

Problem = Callable[..., dict[str, Any]]


def samples(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Metric samples by name, then by sorted labels."""
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


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


async def test_metrics_expose_task_and_runtime_metrics(
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
    assert found["agent_tasks_processed_total"][(("status", "succeeded"),)] >= 1
    assert found["agent_task_duration_seconds_count"][(("status", "succeeded"),)] == 1
    assert "agent_task_duration_seconds_bucket" in found
    assert found["agent_tasks_in_queue"][()] == 0
    assert found["mas_agents"][()] == 2
    assert found["mas_messages_handled_total"][()] >= 1
    for name in (
        "mas_handler_failures_total",
        "mas_dead_letters_total",
        "mas_agent_restarts_total",
    ):
        assert name in found


async def test_metrics_count_dead_lettered_tasks(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]], gw: Gateway
) -> None:
    body = {"agent": "trouble", "message_type": "boom"}
    submitted = await client.post("/tasks/", json=body, headers=token())
    await client.get(f"/tasks/{submitted.json()['id']}", params={"wait": 5}, headers=token())
    await gw.runtime.settle()
    found = samples((await client.get("/metrics")).text)
    assert found["mas_dead_letters_total"][()] == 1
    assert found["mas_handler_failures_total"][()] >= 1
    assert found["agent_task_duration_seconds_count"][(("status", "failed"),)] == 1


async def test_tasks_processed_is_counted_by_the_status_tasks_end_with(
    client: httpx.AsyncClient, token: Callable[..., dict[str, str]], gw: Gateway
) -> None:
    for body in ({"type": "echo"}, {"agent": "trouble", "message_type": "boom"}):
        submitted = await client.post("/tasks/", json=body, headers=token())
        await client.get(f"/tasks/{submitted.json()['id']}", params={"wait": 5}, headers=token())
    await gw.runtime.settle()
    processed = samples((await client.get("/metrics")).text)["agent_tasks_processed_total"]
    assert processed.get((("status", "succeeded"),)) == 1, processed
    assert sum(processed.values()) == 2, processed


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
