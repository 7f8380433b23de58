"""`mas up`: gateway + runtime + agents + SQLite store in one process."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Annotated

import typer

from mas.actors.agent import Agent
from mas.cli.serving import (
    bind,
    check_broker,
    check_store,
    ensure_secret,
    load_settings,
    serve,
    traced,
)
from mas.config import masked_url
from mas.errors import MasError

TOKEN_FILE = Path(".mas") / "dev-token"
"""Where `mas up` leaves its development token (mode 0600) for `mas send` and `$(cat ...)`."""
URL_FILE = Path(".mas") / "url"
"""Where `mas up` leaves the URL it serves, so `mas send` in the same directory finds it."""


def save_token(token: str) -> Path:
    """Write the token readable by its owner only, from the first byte (no chmod window).

    A full-scope token on stdout ends up in terminal scrollback and captured logs; a file
    the owner alone reads does not.
    """
    TOKEN_FILE.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        os.fchmod(file.fileno(), 0o600)  # the file may have existed with a looser mode
        file.write(f"{token}\n")
    return TOKEN_FILE.resolve()


def up(
    host: Annotated[str | None, typer.Option(metavar="HOST", help="interface to listen on")] = None,
    port: Annotated[
        int | None, typer.Option(metavar="PORT", help="port (0 picks a free one)")
    ] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option(
            "--agents",
            metavar="MODULE:CLASS",
            help="more agent classes to run, as module:Class (repeat)",
        ),
    ] = None,
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="runtime log level (JSON on stderr)")
    ] = "INFO",
) -> None:
    """Start the gateway, the runtime with the built-in agents (echo, and a planner with the
    calc and summarize agents its plans use), and the store, in one process."""
    from mas.agents import BUILT_IN
    from mas.api.app import create_app
    from mas.api.auth import SCOPES, mint_token
    from mas.cli.replay import load_agent_class
    from mas.observability.logging import configure_logging

    notes: list[str] = []
    try:
        settings = ensure_secret(
            load_settings(persist=True, log_level=log_level), notes, generate=True
        )
        classes: list[type[Agent]] = list(BUILT_IN)
        classes += [load_agent_class(spec) for spec in agents or []]
    except MasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    check_store(settings)
    check_broker(settings)
    listen_host = host or settings.api.host
    sock = bind(listen_host, settings.api.port if port is None else port)
    bound_port = sock.getsockname()[1]
    secret = settings.auth.jwt_secret
    assert secret is not None
    token = mint_token(secret.get_secret_value(), "dev", sorted(SCOPES), ttl=12 * 3600)
    url = f"http://{listen_host}:{bound_port}"
    token_path = save_token(token)
    URL_FILE.write_text(f"{url}\n")

    typer.echo(f"mas up: {url}")
    typer.echo(f"  API docs:   {url}/docs")
    typer.echo(f"  dashboard:  {url}/dashboard (paste the dev token)")
    typer.echo(f"  agents:     {', '.join(cls.type for cls in classes)}")
    typer.echo(f"  database:   {masked_url(settings.database_url.get_secret_value())}")
    typer.echo(f"  dev token:  saved to {token_path} (owner-only, every scope, valid 12h)")
    typer.echo("              `mas send` in this directory uses it; elsewhere:")
    typer.echo(
        f"              export MAS_URL={url} MAS_TOKEN=$(cat {shlex.quote(str(token_path))})"
    )
    with traced("mas-up", settings) as spans:
        if spans is not None:
            typer.echo(f"  traces:     {spans}")
        for note in notes:
            typer.echo(f"  note: {note}")
        typer.echo("  Ctrl-C stops (drains in-flight work first)", err=False)
        serve(create_app(settings, start_agents=classes), sock, grace=settings.shutdown_timeout)
