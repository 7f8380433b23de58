"""`mas up`: gateway + runtime + agents + SQLite store in one process."""

from __future__ import annotations

import secrets
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer
from pydantic import SecretStr

from mas.actors.agent import Agent
from mas.config import Settings
from mas.errors import MasError

TOKEN_FILE = Path(".mas") / "dev-token"


def up(
    host: Annotated[str | None, typer.Option(help="interface to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port (0 picks a free one)")] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option("--agents", help="more agent classes to run, as module:Class (repeat)"),
    ] = None,
    log_level: Annotated[str, typer.Option(help="runtime log level (JSON on stderr)")] = "INFO",
) -> None:
    """Start the gateway, the runtime with the echo agent, and the store, in one process."""
    import uvicorn

    from agents.echo import EchoAgent
    from mas.api.app import create_app
    from mas.api.auth import SCOPES, mint_token
    from mas.cli.replay import load_agent_class
    from mas.observability.logging import configure_logging

    settings = Settings(persist=True, log_level=log_level)
    notes = []
    if settings.auth.jwt_secret is None:
        generated = SecretStr(secrets.token_urlsafe(48))  # 64 characters: HMAC wants >= 32
        settings = settings.model_copy(
            update={"auth": settings.auth.model_copy(update={"jwt_secret": generated})}
        )
        notes.append(
            "MAS_AUTH__JWT_SECRET is not set: generated one for this run (tokens die with it)"
        )
    try:
        classes: list[type[Agent]] = [EchoAgent]
        classes += [load_agent_class(spec) for spec in agents or []]
    except MasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    listen_host = host or settings.api.host
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on connections accepted from a
    # socket whose proto says TCP; without it every keep-alive response waits ~40 ms for the
    # client's delayed ACK (Nagle).
    family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen_host, settings.api.port if port is None else port))
    except OSError as exc:
        typer.echo(f"error: cannot listen on {listen_host}:{port}: {exc}", err=True)
        raise typer.Exit(2) from None
    sock.listen(2048)  # connections queue from now on, even before the server accepts them
    bound_port = sock.getsockname()[1]
    secret = settings.auth.jwt_secret
    assert secret is not None
    token = mint_token(secret.get_secret_value(), "dev", sorted(SCOPES), ttl=12 * 3600)
    TOKEN_FILE.parent.mkdir(exist_ok=True)
    TOKEN_FILE.write_text(f"http://{listen_host}:{bound_port}\n{token}\n")
    TOKEN_FILE.chmod(0o600)

    url = f"http://{listen_host}:{bound_port}"
    typer.echo(f"mas up: {url}")
    typer.echo(f"  API docs:   {url}/docs")
    typer.echo(f"  agents:     {', '.join(cls.type for cls in classes)}")
    typer.echo(f"  database:   {settings.database_url.get_secret_value()}")
    typer.echo(f"  dev token:  {token}")
    typer.echo(f"              (saved to {TOKEN_FILE} for `mas send`; valid 12h)")
    for note in notes:
        typer.echo(f"  note: {note}")
    typer.echo("  Ctrl-C stops (drains in-flight work first)", err=False)

    app = create_app(settings, start_agents=classes)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM, then re-raises the signal to the previous handler: make
    # that a clean exit (0) instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        anyio.run(server.serve, [sock])
    except MasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
