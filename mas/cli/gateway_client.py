"""What the commands that talk to a gateway over HTTP share (`mas send`, `mas dead-letters`):
where the gateway is, the token, the two options naming them, and how a refusal is told."""

from __future__ import annotations

import os
from typing import Annotated, Any, NoReturn

import typer

from mas.cli.up import TOKEN_FILE, URL_FILE

__all__ = ["TokenOption", "UrlOption", "connection", "fail"]

UrlOption = Annotated[
    str | None,
    typer.Option(metavar="URL", help="gateway URL (default: MAS_URL or mas up)"),
]
TokenOption = Annotated[
    str | None,
    typer.Option(metavar="TOKEN", help="bearer token (default: MAS_TOKEN or mas up)"),
]


def connection(url: str | None, token: str | None) -> tuple[str, str]:
    """The gateway's base URL and a bearer token: the options, else MAS_URL and MAS_TOKEN,
    else what `mas up` saved in this directory. Exits 2 when no token is found."""
    saved_url = URL_FILE.read_text().strip() if URL_FILE.exists() else None
    # The token is the file's last line (files of older versions have the URL first).
    saved = TOKEN_FILE.read_text().split() if TOKEN_FILE.exists() else []
    saved_token = saved[-1] if saved else None
    chosen_url = url or os.environ.get("MAS_URL") or saved_url or "http://127.0.0.1:8000"
    chosen_token = token or os.environ.get("MAS_TOKEN") or saved_token
    if not chosen_token:
        typer.echo(
            "error: no token: pass --token, set MAS_TOKEN, or run `mas up` here first", err=True
        )
        raise typer.Exit(2)
    return chosen_url.rstrip("/"), chosen_token


def fail(response: Any) -> NoReturn:
    """Exit 1 with the gateway's refusal (its problem detail) on one line."""
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    typer.echo(f"error: HTTP {response.status_code}: {detail}", err=True)
    raise typer.Exit(1)
