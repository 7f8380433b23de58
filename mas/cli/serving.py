"""What `mas up` and `mas api` share: the JWT secret, the listening socket, uvicorn."""

from __future__ import annotations

import math
import secrets
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import anyio
import typer
from pydantic import SecretStr, ValidationError

from mas.config import Settings
from mas.errors import ConfigError, MasError

if TYPE_CHECKING:
    from types import FrameType

    from fastapi import FastAPI

__all__ = [
    "bind",
    "check_broker",
    "check_store",
    "ensure_secret",
    "load_settings",
    "serve",
    "settings_error",
    "traced",
]


def settings_error(exc: ValidationError) -> str:
    """A pydantic error about `MAS_*` settings as one sentence naming the variable to fix."""
    problems = []
    for error in exc.errors():
        name = "MAS_" + "__".join(str(part) for part in error["loc"]).upper()
        value = "" if error["type"] == "missing" else f" (got {error['input']!r})"
        message = str(error["msg"])
        problems.append(f"{name}: {message[0].lower()}{message[1:]}{value}")
    return "invalid setting " + "; ".join(problems)


def load_settings(**overrides: object) -> Settings:
    """The MAS_* settings, or exit 2 with one line saying which variable is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        typer.echo(f"error: {settings_error(exc)}", err=True)
        raise typer.Exit(2) from None


def ensure_secret(settings: Settings, notes: list[str], *, generate: bool) -> Settings:
    """Settings with a strong JWT secret: MAS_AUTH__JWT_SECRET, or one generated for this run.

    Only a single process (`mas up`, `generate=True`) may generate one: replicas of `mas api`
    would each make their own, and no token would work on more than one of them.

    Raises:
        ConfigError: the configured secret is a placeholder or too short, or none is set
            and `generate` is off.
    """
    from mas.api.tokens import check_secret

    configured = settings.auth.jwt_secret
    if configured is not None:
        check_secret(configured.get_secret_value())
        return settings
    if not generate:
        raise ConfigError(
            "MAS_AUTH__JWT_SECRET is not set: every gateway (and `mas token create`) must "
            "share one secret of at least 32 bytes, e.g. from "
            '`python -c "import secrets; print(secrets.token_urlsafe(48))"`'
        )
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


def check_broker(settings: Settings) -> None:
    """Fail before listening, with a one-line error, if the broker is unreachable.

    Like the store, a broker that is down would otherwise fail the app's lifespan, which
    uvicorn reports as a traceback.
    """
    if settings.transport != "rabbitmq":
        return
    from mas.transports.amqp import probe

    try:
        anyio.run(probe, settings.amqp_url.get_secret_value(), settings.amqp.connect_timeout)
    except MasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@contextmanager
def traced(service: str, settings: Settings) -> Iterator[str | None]:
    """OpenTelemetry tracing for this command's process when the `OTEL_*` environment asks
    for it (exit 2 if it cannot be done); yields where the spans go (None: off), and exports
    what is buffered when the command ends."""
    from mas.observability.tracing import configure_tracing, shutdown_tracing

    try:
        where = configure_tracing(service, settings.node_id)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        yield where
    finally:
        if where is not None:
            shutdown_tracing()


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


def serve(app: FastAPI, sock: socket.socket, *, grace: float) -> None:
    """Run the app under uvicorn until Ctrl-C or SIGTERM; both drain and exit 0.

    The drain waits for requests in flight at most `grace` seconds (MAS_SHUTDOWN_TIMEOUT),
    then cuts what is left (a long `?wait=`, an event stream): a gateway stops within an
    orchestrator's grace period. The dashboard's event streams end at once (`draining`).
    """
    import uvicorn

    class _Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            app.state.draining = True  # open dashboards close their streams at their next look
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=max(1, math.ceil(grace)),
    )
    server = _Server(config)
    # uvicorn drains on SIGTERM, then re-raises the signal to the previous handler: make
    # that a clean exit (0) instead of death by signal.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # An error in the app's start-up is uvicorn's to report: the likely ones, the store and
    # the broker, are checked before this by `check_store` and `check_broker`. Whatever
    # else fails it, the exit status says so (3, as `uvicorn` itself exits).
    anyio.run(server.serve, [sock])
    if not server.started:
        typer.echo("error: the gateway failed to start (see the log above)", err=True)
        raise typer.Exit(3)
