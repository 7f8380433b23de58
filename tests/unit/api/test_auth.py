"""Bearer auth: every way a token can be wrong is a 401/403/503 problem, never a pass or a 500."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Annotated, Any

import httpx
import jwt
import pytest
import typer
from fastapi import Depends, FastAPI
from pydantic import SecretStr
from typer.testing import CliRunner

from mas.api import auth as auth_module
from mas.api.auth import (
    CLOCK_SKEW,
    MAX_TTL,
    SCOPES,
    Claims,
    check_secret,
    decode_token,
    mint_token,
    require,
)
from mas.api.problems import PROBLEM_JSON, Problem, install_problem_handlers
from mas.cli.token import app as token_app
from mas.cli.token import parse_ttl
from mas.config import AuthSettings, Settings
from mas.errors import ConfigError

# Short test secrets are deliberate; PyJWT's key-length advice is noise here.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

SECRET = "test-secret"
STRONG = "a-strong-test-secret-" + "q" * 32  # what `check_secret` lets a gateway serve with


def make_app(secret: str | None = SECRET) -> FastAPI:
    app = FastAPI()
    app.state.settings = Settings(
        auth=AuthSettings(jwt_secret=SecretStr(secret) if secret is not None else None)
    )
    install_problem_handlers(app)

    @app.get("/needs")
    async def needs(claims: Annotated[Claims, Depends(require("tasks:write"))]) -> dict[str, Any]:
        return {"sub": claims.subject, "scopes": sorted(claims.scopes)}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "alice",
        "scopes": ["tasks:write"],
        "iat": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_problem(response: httpx.Response, status: int, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    return body


class TestRequire:
    pytestmark = pytest.mark.anyio

    async def test_valid_token_admits_and_route_sees_subject(
        self, client: httpx.AsyncClient
    ) -> None:
        token = mint_token(SECRET, "alice", ["tasks:write", "tasks:read"], ttl=60)
        response = await client.get("/needs", headers=bearer(token))
        assert response.status_code == 200
        assert response.json() == {"sub": "alice", "scopes": ["tasks:read", "tasks:write"]}

    async def test_no_header_is_401_with_bearer_challenge(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/needs")
        assert_problem(response, 401, "no Authorization header", "Bearer")
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_basic_scheme_is_401(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/needs", headers={"Authorization": "Basic abc"})
        assert_problem(response, 401, "not a bearer token")
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_garbage_token_is_malformed(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/needs", headers=bearer("garbage"))
        assert_problem(response, 401, "malformed")
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    async def test_expired_token(self, client: httpx.AsyncClient) -> None:
        past = int(time.time()) - 3600
        token = jwt.encode(claims(iat=past - 60, exp=past), SECRET, algorithm="HS256")
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "expired")
        assert 'error="invalid_token"' in response.headers["www-authenticate"]

    async def test_token_signed_with_another_secret(self, client: httpx.AsyncClient) -> None:
        token = mint_token("another-secret", "mallory", ["tasks:write"], ttl=60)
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "signature", "another secret")

    async def test_alg_none_built_by_pyjwt_is_refused(self, client: httpx.AsyncClient) -> None:
        token = jwt.encode(claims(), None, algorithm="none")
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "unsigned", "HS256")

    async def test_alg_none_built_by_hand_is_refused(self, client: httpx.AsyncClient) -> None:
        token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "unsigned", "HS256")

    async def test_other_algorithm_with_right_secret_is_refused(
        self, client: httpx.AsyncClient
    ) -> None:
        token = jwt.encode(claims(), SECRET, algorithm="HS512")
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "HS512", "accepts only HS256")

    async def test_token_without_exp_is_refused(self, client: httpx.AsyncClient) -> None:
        token = jwt.encode(claims(exp=None), SECRET, algorithm="HS256")
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "'exp'")

    async def test_token_without_sub_is_refused(self, client: httpx.AsyncClient) -> None:
        token = jwt.encode(claims(sub=None), SECRET, algorithm="HS256")
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "'sub'")

    async def test_scopes_claim_of_wrong_type_is_malformed(self, client: httpx.AsyncClient) -> None:
        token = jwt.encode(claims(scopes="tasks:write"), SECRET, algorithm="HS256")
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 401, "scopes")

    async def test_missing_scope_is_403_naming_it(self, client: httpx.AsyncClient) -> None:
        token = mint_token(SECRET, "bob", ["tasks:read"], ttl=60)
        response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 403, "tasks:write")
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]

    @pytest.mark.parametrize("secret", [None, ""])
    async def test_no_secret_configured_is_503(self, secret: str | None) -> None:
        transport = httpx.ASGITransport(app=make_app(secret=secret))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            token = mint_token(SECRET, "alice", ["tasks:write"], ttl=60)
            response = await client.get("/needs", headers=bearer(token))
        assert_problem(response, 503, "MAS_AUTH__JWT_SECRET")

    async def test_openapi_declares_the_bearer_scheme(self, client: httpx.AsyncClient) -> None:
        schema = (await client.get("/openapi.json")).json()
        scheme = schema["components"]["securitySchemes"]["bearer"]
        assert scheme["type"] == "http"
        assert scheme["scheme"] == "bearer"
        assert schema["paths"]["/needs"]["get"]["security"] == [{"bearer": []}]


def test_require_refuses_unknown_scope_when_routes_are_declared() -> None:
    with pytest.raises(ConfigError, match="tasks:writ"):
        require("tasks:writ")


class TestMintDecode:
    def test_round_trip(self) -> None:
        before = datetime.now(UTC)
        token = mint_token(SECRET, "svc", ["agents:read", "metrics:read"], ttl=120)
        decoded = decode_token(token, SECRET, "HS256")
        assert decoded.subject == "svc"
        assert decoded.scopes == frozenset({"agents:read", "metrics:read"})
        assert decoded.expires_at.tzinfo is UTC
        assert 110 <= (decoded.expires_at - before).total_seconds() <= 122

    def test_claims_include_iat_and_a_random_jti(self) -> None:
        first = jwt.decode(
            mint_token(SECRET, "svc", ["tasks:read"], ttl=60), SECRET, algorithms=["HS256"]
        )
        second = jwt.decode(
            mint_token(SECRET, "svc", ["tasks:read"], ttl=60), SECRET, algorithms=["HS256"]
        )
        assert set(first) == {"sub", "scopes", "iat", "exp", "jti"}
        assert first["scopes"] == ["tasks:read"]
        assert first["jti"] != second["jti"]

    def test_hs384_round_trip(self) -> None:
        token = mint_token(SECRET, "svc", ["tasks:read"], ttl=60, algorithm="HS384")
        assert jwt.get_unverified_header(token)["alg"] == "HS384"
        assert decode_token(token, SECRET, "HS384").subject == "svc"

    def test_unknown_scope_names_the_known_ones(self) -> None:
        with pytest.raises(ConfigError, match="tasks:delete") as caught:
            mint_token(SECRET, "svc", ["tasks:delete"], ttl=60)
        for scope in SCOPES:
            assert scope in str(caught.value)

    @pytest.mark.parametrize("ttl", [0, -5, float("nan")])
    def test_ttl_must_be_positive(self, ttl: float) -> None:
        with pytest.raises(ConfigError, match="ttl"):
            mint_token(SECRET, "svc", ["tasks:read"], ttl=ttl)

    def test_mint_refuses_alg_none(self) -> None:
        with pytest.raises(ConfigError, match="HS256"):
            mint_token(SECRET, "svc", ["tasks:read"], ttl=60, algorithm="none")

    def test_decode_error_is_a_401_problem(self) -> None:
        token = mint_token(SECRET, "svc", ["tasks:read"], ttl=60)
        with pytest.raises(Problem) as caught:
            decode_token(token, "wrong", "HS256")
        assert caught.value.status == 401
        assert caught.value.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'

    def test_a_remembered_token_still_expires(self, monkeypatch: pytest.MonkeyPatch) -> None:
        token = mint_token(SECRET, "svc", ["tasks:read"], ttl=60)
        assert decode_token(token, SECRET, "HS256").subject == "svc"  # verified, remembered
        later = time.time() + 60 + CLOCK_SKEW + 1
        monkeypatch.setattr(auth_module, "time", SimpleNamespace(time=lambda: later))
        with pytest.raises(Problem) as caught:
            decode_token(token, SECRET, "HS256")
        assert (caught.value.status, "expired" in caught.value.detail) == (401, True)

    def test_a_remembered_token_is_checked_against_the_current_secret(self) -> None:
        token = mint_token(SECRET, "svc", ["tasks:read"], ttl=60)
        assert decode_token(token, SECRET, "HS256").subject == "svc"
        with pytest.raises(Problem, match="signature"):  # the secret was rotated
            decode_token(token, "another-secret-" + "y" * 32, "HS256")
        with pytest.raises(Problem, match="accepts only HS512"):
            decode_token(token, SECRET, "HS512")


class TestCli:
    def test_create_prints_only_a_token(self) -> None:
        result = CliRunner().invoke(
            token_app,
            ["create", "--sub", "ci", "--scope", "tasks:read", "--ttl", "1h", "--secret", STRONG],
        )
        assert result.exit_code == 0, result.output
        token = result.stdout.strip()
        assert "\n" not in token
        decoded = decode_token(token, STRONG, "HS256")
        assert decoded.subject == "ci"
        assert decoded.scopes == frozenset({"tasks:read"})
        lifetime = (decoded.expires_at - datetime.now(UTC)).total_seconds()
        assert 3590 <= lifetime <= 3601

    def test_scope_all_grants_every_scope(self) -> None:
        result = CliRunner().invoke(
            token_app, ["create", "--sub", "ops", "--scope", "all", "--secret", STRONG]
        )
        assert result.exit_code == 0, result.output
        assert decode_token(result.stdout.strip(), STRONG, "HS256").scopes == frozenset(SCOPES)

    def test_secret_defaults_to_settings(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("MAS_AUTH__JWT_SECRET", "from-env-" + STRONG)
        result = CliRunner().invoke(token_app, ["create", "--sub", "ci", "--scope", "tasks:read"])
        assert result.exit_code == 0, result.output
        token = result.stdout.strip()
        assert decode_token(token, "from-env-" + STRONG, "HS256").subject == "ci"

    def test_missing_secret_exits_2_saying_how_to_set_it(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
    ) -> None:
        monkeypatch.chdir(tmp_path)  # no .env to pick a secret up from
        monkeypatch.delenv("MAS_AUTH__JWT_SECRET", raising=False)
        result = CliRunner().invoke(token_app, ["create", "--sub", "ci", "--scope", "tasks:read"])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "MAS_AUTH__JWT_SECRET" in result.stderr

    def test_unknown_scope_exits_2(self) -> None:
        result = CliRunner().invoke(
            token_app, ["create", "--sub", "ci", "--scope", "tasks:delete", "--secret", STRONG]
        )
        assert result.exit_code == 2
        assert "known scopes" in result.stderr

    def test_bad_ttl_exits_2(self) -> None:
        result = CliRunner().invoke(
            token_app,
            ["create", "--sub", "ci", "--scope", "all", "--ttl", "soon", "--secret", STRONG],
        )
        assert result.exit_code == 2
        assert result.stdout == ""


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5h", 5400)],
)
def test_parse_ttl(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0h", "-1", "1w", "h", "1 hour"])
def test_parse_ttl_refuses(text: str) -> None:
    with pytest.raises(typer.BadParameter):
        parse_ttl(text)


class TestOutOfRangeClaims:
    """A validly signed token with an absurd number is the client's 401, never our 500."""

    pytestmark = pytest.mark.anyio

    @pytest.mark.parametrize(
        "overrides",
        [
            {"exp": 10**20},
            {"exp": 1e20},
            {"exp": float("inf")},
            {"iat": 10**20},
            {"iat": float("inf")},
            {"nbf": 10**20},
            {"nbf": float("-inf")},
        ],
        ids=["exp-int", "exp-float", "exp-inf", "iat-int", "iat-inf", "nbf-int", "nbf-inf"],
    )
    async def test_is_a_401_problem(
        self, client: httpx.AsyncClient, overrides: dict[str, Any]
    ) -> None:
        token = jwt.encode(claims(**overrides), SECRET, algorithm="HS256")
        for _ in range(2):  # and again: a refused token is not remembered as good
            response = await client.get("/needs", headers=bearer(token))
            assert_problem(response, 401)
            assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    def test_mint_refuses_a_ttl_past_a_year(self) -> None:
        with pytest.raises(ConfigError, match=r"at most 31536000 seconds \(365 days\)"):
            mint_token(SECRET, "svc", ["tasks:read"], ttl=MAX_TTL + 1)
        assert decode_token(mint_token(SECRET, "svc", ["tasks:read"], ttl=MAX_TTL), SECRET, "HS256")

    @pytest.mark.parametrize("ttl", ["99999999999d", "366d", "9" * 400])
    def test_cli_refuses_a_ttl_past_a_year_with_exit_2(self, ttl: str) -> None:
        result = CliRunner().invoke(
            token_app,
            ["create", "--sub", "ci", "--scope", "all", "--ttl", ttl, "--secret", STRONG],
        )
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert "365d" in result.stderr
        assert "Traceback" not in result.stderr


class TestCheckSecret:
    """A secret anyone could guess is refused wherever a gateway would serve or sign with it."""

    @pytest.mark.parametrize(
        "secret",
        [
            "changeme",
            "CHANGEME",
            "change-me",
            "secret",
            "Secret",
            "your-secret",
            "your_secret",
            "change-me-to-a-random-secret-of-at-least-32-characters",  # .env.example's
            "REPLACE-ME-WITH-SOMETHING-LONG-ENOUGH-TO-PASS-THE-LENGTH",
        ],
    )
    def test_placeholders_are_refused(self, secret: str) -> None:
        with pytest.raises(ConfigError, match="placeholder"):
            check_secret(secret)

    @pytest.mark.parametrize("secret", ["", "s", "test-secret", "x" * 31, "é" * 15])
    def test_short_secrets_are_refused_naming_the_minimum(self, secret: str) -> None:
        with pytest.raises(ConfigError, match="at least 32"):
            check_secret(secret)

    @pytest.mark.parametrize("secret", [STRONG, "x" * 32, "é" * 16])
    def test_32_bytes_that_are_not_a_placeholder_pass(self, secret: str) -> None:
        check_secret(secret)

    @pytest.mark.parametrize("secret", ["changeme", "short"])
    def test_create_app_refuses_a_weak_secret(self, secret: str) -> None:
        from mas.api.app import create_app

        with pytest.raises(ConfigError, match="MAS_AUTH__JWT_SECRET"):
            create_app(Settings(auth=AuthSettings(jwt_secret=SecretStr(secret))))

    @pytest.mark.parametrize("secret", ["changeme", "s"])
    def test_token_create_refuses_to_sign_with_a_weak_secret(self, secret: str) -> None:
        result = CliRunner().invoke(
            token_app, ["create", "--sub", "ci", "--scope", "all", "--secret", secret]
        )
        assert result.exit_code == 2
        assert result.stdout == ""
        assert "MAS_AUTH__JWT_SECRET" in result.stderr
