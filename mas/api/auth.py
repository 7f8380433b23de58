"""JWT bearer auth of the gateway: tokens carry scopes, each route requires the ones it needs.

The algorithm is pinned by settings (never taken from the token, so `alg: none` and algorithm
confusion are refused), `exp` is required, and every way a token can be wrong becomes a 401
problem whose detail tells the client what to fix; a valid token lacking a scope is a 403.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import jwt
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mas.api.problems import Problem
from mas.api.tokens import (
    ALGORITHMS,
    CLOCK_SKEW,
    MAX_TTL,
    MIN_SECRET_BYTES,
    SCOPES,
    check_algorithm,
    check_secret,
    known_scopes,
    mint_token,
)
from mas.config import AuthSettings

__all__ = [
    "ALGORITHMS",
    "CLOCK_SKEW",
    "MAX_TTL",
    "MIN_SECRET_BYTES",
    "SCOPES",
    "Claims",
    "admit",
    "check_secret",
    "decode_token",
    "mint_token",
    "require",
]


_INVALID_TOKEN = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
_NO_TOKEN = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: who it is and what it may do, until when."""

    subject: str
    scopes: frozenset[str]
    expires_at: datetime


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "Unauthorized", detail, headers=dict(_INVALID_TOKEN))


def _token_algorithm(token: str) -> str:
    try:
        return str(jwt.get_unverified_header(token).get("alg"))
    except jwt.PyJWTError:
        return "?"


def decode_token(token: str, secret: str, algorithm: str) -> Claims:
    """Verify a token's signature, algorithm and expiry, and read its claims.

    A token verified before is not verified again (its signature cannot have changed), but
    its expiry is checked on every use.

    Raises:
        Problem: 401 with `WWW-Authenticate: Bearer error="invalid_token"` and a detail
            saying what is wrong (expired, bad signature, malformed, wrong algorithm,
            missing claim).
        ConfigError: `algorithm` is outside `ALGORITHMS` (a server misconfiguration).
    """
    claims = _verify(token, secret, algorithm)
    if claims.expires_at.timestamp() + CLOCK_SKEW <= time.time():
        raise _expired()
    return claims


def _expired() -> Problem:
    return _unauthorized("the token has expired: mint a new one with `mas token create`")


@functools.lru_cache(maxsize=1024)
def _verify(token: str, secret: str, algorithm: str) -> Claims:
    """`decode_token` without the expiry check of a remembered token (the cached part).

    Verifying a signature and parsing two JSON documents cost more than the rest of a small
    request; a client sends the same token many times.
    """
    check_algorithm(algorithm)
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[algorithm],
            options={"require": ["exp", "sub"]},
            leeway=CLOCK_SKEW,
        )
    except jwt.ExpiredSignatureError:
        raise _expired() from None
    except jwt.InvalidSignatureError:
        raise _unauthorized(
            "the token's signature does not match: it was signed with another secret"
        ) from None
    except jwt.InvalidAlgorithmError:
        used = _token_algorithm(token)
        what = "is unsigned (alg none)" if used.lower() == "none" else f"uses alg {used}"
        raise _unauthorized(f"the token {what}; this gateway accepts only {algorithm}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _unauthorized(f"the token lacks the required {exc.claim!r} claim") from None
    except jwt.ImmatureSignatureError:
        raise _unauthorized(
            "the token is not valid yet (issued in the future): check the clocks"
        ) from None
    except jwt.DecodeError:
        raise _unauthorized(
            "the token is malformed: expected a JWT (header.payload.signature)"
        ) from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"the token is invalid: {exc}") from None

    scopes = payload.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise _unauthorized("the token is malformed: the 'scopes' claim must be a list of strings")
    try:
        # PyJWT checked that `exp` is an integer not yet past; one this far off (1e20) is
        # still beyond what a datetime holds, and must be the client's 401, not our 500.
        expires_at = datetime.fromtimestamp(float(payload["exp"]), tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise _unauthorized(
            "the token is malformed: its 'exp' claim is out of range (not a date before 9999)"
        ) from None
    return Claims(subject=str(payload["sub"]), scopes=frozenset(scopes), expires_at=expires_at)


_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="a JWT from `mas token create` (or the development token `mas up` prints)",
)


def require(*scopes: str) -> Callable[..., Awaitable[Claims]]:
    """Make a dependency that admits only requests whose bearer token grants all `scopes`.

    Scopes are checked here, when routes are declared, so a typo fails at import rather
    than locking everyone out at runtime.

    Raises:
        ConfigError: an unknown scope.
    """
    needed = known_scopes(scopes)

    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    ) -> Claims:
        return _admit(request, credentials, needed)

    dependency.__name__ = "require_" + "_".join(sorted(needed)).replace(":", "_")
    return dependency


async def admit(request: Request, scopes: frozenset[str]) -> Claims:
    """The claims of the request's bearer token, checked as `require(*scopes)` checks them.

    For a route that reads its request itself instead of through FastAPI's dependencies.

    Raises:
        Problem: 401 or 403, as `require` raises them; 503 when no secret is configured.
    """
    return _admit(request, await _bearer(request), scopes)


def _admit(
    request: Request, credentials: HTTPAuthorizationCredentials | None, needed: frozenset[str]
) -> Claims:
    auth: AuthSettings = request.app.state.settings.auth
    secret = auth.jwt_secret.get_secret_value() if auth.jwt_secret is not None else ""
    if not secret:  # an empty secret would let anyone sign tokens
        raise Problem(
            503,
            "Service Unavailable",
            "authentication is not configured: set MAS_AUTH__JWT_SECRET "
            "(or start the gateway with `mas up`, which generates one)",
        )
    if credentials is None:
        header = request.headers.get("authorization")
        detail = (
            "no Authorization header: send `Authorization: Bearer <token>`"
            if not header
            else "the Authorization header is not a bearer token: send "
            "`Authorization: Bearer <token>`"
        )
        raise Problem(401, "Unauthorized", detail, headers=dict(_NO_TOKEN))
    claims = decode_token(credentials.credentials, secret, auth.algorithm)
    request.state.caller = claims.subject  # for the access log
    missing = sorted(needed - claims.scopes)
    if missing:
        raise Problem(
            403,
            "Forbidden",
            f"the token lacks scope(s) {', '.join(missing)}: mint one with "
            + " ".join(f"--scope {scope}" for scope in missing),
            headers={
                "WWW-Authenticate": (
                    f'Bearer error="insufficient_scope", scope="{" ".join(missing)}"'
                )
            },
        )
    return claims
