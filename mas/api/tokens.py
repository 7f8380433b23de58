"""Token minting and the rules tokens follow: scopes, algorithms, lifetimes, secrets.

Kept apart from the gateway's request handling (`mas.api.auth`) so that `mas token create`
and `mas --help` load neither FastAPI nor, until a token is signed, PyJWT.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Iterable, Sequence

from mas.errors import ConfigError

__all__ = [
    "ALGORITHMS",
    "CLOCK_SKEW",
    "MAX_TTL",
    "MIN_SECRET_BYTES",
    "SCOPES",
    "check_algorithm",
    "check_secret",
    "known_scopes",
    "mint_token",
]

SCOPES: dict[str, str] = {
    "tasks:read": "read tasks, their results and their event streams",
    "tasks:write": "submit tasks, cancel one's own",
    "tasks:admin": "read and cancel every caller's tasks (others see only their own)",
    "agents:read": "list agents and read their state",
    "agents:admin": "spawn and stop agents",
    "messages:write": "send messages straight to an agent",
    "dead_letters:read": "list dead letters and read them, messages included",
    "dead_letters:admin": "replay and discard dead letters",
    "metrics:read": "read /metrics when it is not public",
}

ALGORITHMS = ("HS256", "HS384", "HS512")
"""The only algorithms tokens may use: HMAC with the shared secret, nothing asymmetric or none."""

CLOCK_SKEW = 5.0
"""Seconds of leeway on `exp`/`iat`, so a token minted on another machine works at once."""

MAX_TTL = 365 * 24 * 3600.0
"""The longest lifetime `mint_token` signs (a year): a token that outlives every rotation of
the secret is a leak waiting to happen, and a far-off `exp` is a date nothing can represent."""

MIN_SECRET_BYTES = 32
"""The shortest secret a gateway serves with: HMAC-SHA256's output size (RFC 7518 3.2); a
shorter one can be brute-forced offline from any token."""

# Secrets copied from examples and tutorials: whoever read the same page can sign tokens.
_PLACEHOLDERS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "secret",
        "your-secret",
        "your_secret",
        "yoursecret",
        "mysecret",
        "my-secret",
        "supersecret",
        "super-secret",
        "jwt-secret",
        "jwt_secret",
        "password",
        "replaceme",
        "replace-me",
        "default",
        "test",
    }
)
# Markers of a template value, however long it is (.env.example's is over 32 characters).
_PLACEHOLDER_MARKERS = (
    "changeme",
    "change-me",
    "change_me",
    "change me",
    "replaceme",
    "replace-me",
    "replace_me",
    "your-secret",
    "your_secret",
    "yoursecret",
    "placeholder",
)
_GENERATE = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'


def known_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes as a set; raises ConfigError naming any that is not in `SCOPES`."""
    wanted = frozenset(scopes)
    unknown = sorted(wanted - SCOPES.keys())
    if unknown:
        raise ConfigError(
            f"unknown scope(s) {', '.join(unknown)}: known scopes are {', '.join(SCOPES)}"
        )
    return wanted


def check_algorithm(algorithm: str) -> None:
    """Raise ConfigError unless `algorithm` is one of `ALGORITHMS`."""
    if algorithm not in ALGORITHMS:
        raise ConfigError(
            f"algorithm {algorithm!r} is not allowed: use one of {', '.join(ALGORITHMS)}"
        )


def mint_token(
    secret: str, subject: str, scopes: Sequence[str], ttl: float, algorithm: str = "HS256"
) -> str:
    """Sign a token for `subject` granting `scopes` for `ttl` seconds.

    Raises:
        ConfigError: an unknown scope, a ttl that is not positive or exceeds `MAX_TTL`, an
            empty secret or subject, or an algorithm outside `ALGORITHMS`.
    """
    granted = known_scopes(scopes)
    if not ttl > 0:  # also refuses NaN
        raise ConfigError(f"ttl must be more than 0 seconds, got {ttl}")
    if ttl > MAX_TTL:
        raise ConfigError(
            f"ttl must be at most {MAX_TTL:.0f} seconds (365 days), got {ttl:.0f}: "
            "mint a shorter-lived token and a new one when it expires"
        )
    if not secret:
        raise ConfigError("the secret is empty: set MAS_AUTH__JWT_SECRET")
    if not subject:
        raise ConfigError("the subject (sub) is empty: name who the token is for")
    check_algorithm(algorithm)
    now = time.time()
    claims = {
        "sub": subject,
        "scopes": sorted(granted),
        "iat": int(now),
        "exp": math.ceil(now + ttl),
        "jti": secrets.token_urlsafe(16),
    }
    import jwt  # the `api` extra: only signing needs it, not `mas --help`

    return jwt.encode(claims, secret, algorithm=algorithm)


def check_secret(secret: str) -> None:
    """Refuse a signing secret anyone could guess: a well-known placeholder, or a short one.

    Raises:
        ConfigError: the secret is a placeholder (case-insensitive) or shorter than
            `MIN_SECRET_BYTES` bytes; the message says how to generate a good one.
    """
    lowered = secret.strip().lower()
    if lowered in _PLACEHOLDERS or any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        raise ConfigError(
            "MAS_AUTH__JWT_SECRET is a well-known placeholder, so anyone can sign tokens: "
            f"set it to a random secret, e.g. from `{_GENERATE}`"
        )
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise ConfigError(
            f"MAS_AUTH__JWT_SECRET is {size} bytes, too short to resist guessing: use at "
            f"least {MIN_SECRET_BYTES}, e.g. from `{_GENERATE}`"
        )
