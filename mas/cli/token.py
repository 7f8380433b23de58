"""`mas token create`: mint a gateway bearer token, printed alone so scripts can capture it."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from mas.api.tokens import MAX_TTL, SCOPES, check_secret, mint_token
from mas.errors import ConfigError

__all__ = ["app", "parse_ttl"]

app = typer.Typer(help="Gateway bearer tokens (JWT).", no_args_is_help=True, rich_markup_mode=None)


@app.callback()
def main() -> None:
    """Gateway bearer tokens (JWT); a group even with one command, so `create` stays a word."""


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)


def parse_ttl(text: str) -> float:
    """Read a lifetime as seconds (`3600`) or with a unit (`30m`, `12h`, `7d`).

    Raises:
        typer.BadParameter: not a positive duration, so typer exits 2 with usage.
    """
    match = _TTL.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration: use seconds or 30m, 12h, 7d")
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0:
        raise typer.BadParameter("the lifetime must be more than 0")
    return seconds


@app.command()
def create(
    sub: Annotated[
        str, typer.Option("--sub", metavar="NAME", help="who the token is for (the `sub` claim)")
    ],
    scope: Annotated[
        list[str],
        typer.Option(
            "--scope",
            metavar="SCOPE",
            help=f"a scope to grant, repeatable; `all` grants every one ({', '.join(SCOPES)})",
        ),
    ],
    ttl: Annotated[
        str,
        typer.Option(
            "--ttl",
            metavar="DURATION",
            help="lifetime: seconds, or with a unit (30m, 12h, 7d); at most 365d",
        ),
    ] = "1h",
    secret: Annotated[
        str | None,
        typer.Option(
            "--secret",
            metavar="SECRET",
            help="signing secret (default: MAS_AUTH__JWT_SECRET; prefer it, "
            "a secret on the command line lands in shell history)",
        ),
    ] = None,
) -> None:
    """Print a signed token granting the scopes for the lifetime; nothing else on stdout."""
    seconds = parse_ttl(ttl)
    if seconds > MAX_TTL:
        raise typer.BadParameter(
            f"{ttl!r} is longer than the limit of 365d: mint a shorter-lived token",
            param_hint="'--ttl'",
        )
    from mas.cli.serving import load_settings

    auth = load_settings().auth
    key = secret or (auth.jwt_secret.get_secret_value() if auth.jwt_secret else None)
    if not key:
        typer.echo(
            "error: no signing secret: set MAS_AUTH__JWT_SECRET (environment or .env) "
            "to the gateway's secret, or pass --secret",
            err=True,
        )
        raise typer.Exit(2)
    scopes = list(SCOPES) if "all" in scope else scope
    try:
        check_secret(key)  # a gateway refuses to serve with it: do not sign with it either
        token = mint_token(key, sub, scopes, seconds, auth.algorithm)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)
