"""Security headers on every response, CORS only for configured origins, honest `Allow`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from mas.config import ApiSettings
from tests.unit.api.conftest import MAX_BYTES, TokenFactory

pytestmark = pytest.mark.anyio

UI = "https://ui.example.com"


def assert_hardened(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_api_json_is_never_cached_nor_sniffed(
    client: httpx.AsyncClient, token: TokenFactory
) -> None:
    created = await client.post("/tasks/", json={"type": "echo"}, headers=token())
    listed = await client.get("/tasks/", headers=token())
    missing = await client.get("/tasks/nope", headers=token())
    for response in (created, listed, missing):
        assert_hardened(response)
        assert response.headers["cache-control"] == "no-store", response.request.url


async def test_refusals_from_admission_carry_the_headers_too(
    client: httpx.AsyncClient, token: TokenFactory
) -> None:
    anonymous = await client.post("/tasks/", json={"type": "echo"})
    too_large = await client.post(
        "/tasks/",
        json={"type": "echo", "payload": {"x": "y" * MAX_BYTES}},
        headers=token(),
    )
    assert (anonymous.status_code, too_large.status_code) == (401, 413)
    for response in (anonymous, too_large):
        assert_hardened(response)
        assert response.headers["cache-control"] == "no-store"


async def test_the_dashboard_page_cannot_be_framed_and_runs_only_its_own_code(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/dashboard")
    assert_hardened(response)
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split("; ")
    }
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'none'"]
    assert all(source.startswith("'sha256-") for source in policy["script-src"])
    assert policy["connect-src"] == ["'self'"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-cache"  # its own, kept


async def test_metrics_are_hardened_but_not_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert_hardened(response)
    assert "cache-control" not in response.headers


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/tasks/", "GET, POST"),  # Starlette said POST: the first route's only
        ("PUT", "/tasks/abc", "GET"),
        ("GET", "/tasks/abc/cancel", "POST"),
        ("POST", "/livez", "GET"),
    ],
)
async def test_a_405_names_every_method_the_path_answers(
    client: httpx.AsyncClient,
    token: TokenFactory,
    problem: Callable[..., dict[str, Any]],
    method: str,
    path: str,
    allow: str,
) -> None:
    response = await client.request(method, path, headers=token())
    problem(response, 405)
    assert response.headers["allow"] == allow
    assert_hardened(response)


async def test_cors_is_off_unless_origins_are_configured(client: httpx.AsyncClient) -> None:
    preflight = await client.options(
        "/tasks/", headers={"Origin": UI, "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = await client.get("/livez", headers={"Origin": UI})
    assert "access-control-allow-origin" not in simple.headers


async def test_a_configured_origin_may_call_the_api_with_a_token_and_a_key(
    make_app: Callable[..., FastAPI], serve: Any, token: TokenFactory
) -> None:
    app = make_app(api=ApiSettings(cors_origins=[UI]))
    async with serve(app) as client:
        preflight = await client.options(
            "/tasks/",
            headers={
                "Origin": UI,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == UI
        assert "POST" in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "content-type", "idempotency-key"):
            assert header in allowed
        assert_hardened(preflight)
        # The page can read a refusal too (to tell its user the token is wrong).
        anonymous = await client.post("/tasks/", json={"type": "echo"}, headers={"Origin": UI})
        assert anonymous.status_code == 401
        assert anonymous.headers["access-control-allow-origin"] == UI
        created = await client.post(
            "/tasks/", json={"type": "echo"}, headers={"Origin": UI, **token()}
        )
        assert created.headers["access-control-allow-origin"] == UI
        assert "location" in created.headers["access-control-expose-headers"].lower()
        other = await client.options(
            "/tasks/",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert other.status_code == 400
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("origin", ["https://ui.example.com/", "ui.example.com", "https://a/b"])
def test_an_origin_with_a_path_or_without_a_scheme_is_refused(origin: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        ApiSettings(cors_origins=[origin])


def test_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from mas.config import Settings

    monkeypatch.setenv("MAS_API__CORS_ORIGINS", f'["{UI}", "http://localhost:5173"]')
    assert Settings().api.cors_origins == [UI, "http://localhost:5173"]
