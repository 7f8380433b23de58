"""What `mas up` and `mas api` share: the JWT secret, the listening socket, uvicorn."""

from __future__ import annotations

import secrets
import signal
import socket
import sys
from typing import TYPE_CHECKING

import anyio
import typer
from pydantic import SecretStr

from mas.config import Settings
from mas.errors import MasError

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["bind", "check_store", "ensure_secret", "serve"]


def ensure_secret(settings: Settings, notes: list[str]) -> Settings:
    """Settings with a JWT secret: MAS_AUTH__JWT_SECRET, or one generated for this run."""
    if settings.auth.jwt_secret is not None:
        return settings
    generated = SecretStr(secrets.token_urlsafe(48))  # 64 characters: HMAC wants >= 32
    notes.append("MAS_AUTH__JWT_SECRET is not set: generated one for this run (tokens die with it)")
    return settings.model_copy(
        update={"auth": settings.auth.model_copy(update={"jwt_secret": generated})}
    )


def check_store(settings: Settings) -> None:
    """Fail before listening, with a one-line error, if the store is unreachable or outdated.

    Errors raised in the app's lifespan reach the user as a uvicorn traceback instead.
    """
    from mas.persistence import open_store

    async def check() -> None:
        store = await open_store(settings)
        await store.close()

    try:
        anyio.run(check)
    except MasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the server starts so the port is known (and taken)."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on connections accepted from a
    # socket whose proto says TCP; without it every keep-alive response waits ~40 ms for the
    # client's delayed ACK (Nagle).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        typer.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        raise typer.Exit(2) from None
    sock.listen(2048)  # connections queue from now on, even before the server accepts them
    return sock


def serve(app: FastAPI, sock: socket.socket) -> None:
    """Run the app under uvicorn until Ctrl-C or SIGTERM; both drain and exit 0."""
    import uvicorn

    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn drains on SIGTERM, then re-raises the signal to the previous handler: make
    # that a clean exit (0) instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # An error in the app's start-up is uvicorn's to report (and exit 3): the store, the
    # likely one, is checked before this by `check_store`.
    anyio.run(server.serve, [sock])
