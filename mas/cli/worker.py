"""`mas worker`: host agents in this process and serve them from the configured transport.

With `MAS_TRANSPORT=rabbitmq`, start as many workers as you like, on any machine: each one
consumes its agents' type queues (competing) and their own agent queues. SIGTERM or Ctrl-C
drains: the worker stops taking deliveries, finishes and acknowledges what it holds, records
the audit, and exits 0; what it did not start goes back to the broker for the others.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Annotated

import anyio
import typer

from mas.actors.agent import Agent
from mas.config import Settings, masked_url
from mas.errors import MasError

if TYPE_CHECKING:
    from mas.runtime import Runtime

__all__ = ["worker"]


def worker(
    agents: Annotated[
        list[str],
        typer.Option(
            "--agents",
            metavar="MODULE:CLASS",
            help="agent classes to host, as module:Class (repeat)",
        ),
    ],
    instances: Annotated[
        int,
        typer.Option(min=1, max=10_000, metavar="N", help="agents of each class in this worker"),
    ] = 1,
    persist: Annotated[
        bool, typer.Option(help="record tasks and the audit in MAS_DATABASE_URL")
    ] = True,
    log_level: Annotated[
        str | None, typer.Option(metavar="LEVEL", help="log level (JSON on stderr)")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            metavar="PORT",
            help="serve /metrics, /livez and /readyz on this port (0: any free one; "
            "default MAS_WORKER__METRICS_PORT, else none)",
        ),
    ] = None,
) -> None:
    """Host agents and handle their messages until SIGTERM or Ctrl-C (both drain, exit 0)."""
    from mas.cli.replay import load_agent_class
    from mas.cli.serving import bind, traced
    from mas.observability.logging import configure_logging

    overrides: dict[str, object] = {"persist": persist}
    if log_level is not None:
        overrides["log_level"] = log_level
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        classes = [load_agent_class(spec) for spec in agents]
    except (MasError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if metrics_port is None:
        metrics_port = settings.worker.metrics_port
    sock = None if metrics_port is None else bind(settings.worker.metrics_host, metrics_port)
    configure_logging(settings.log_level, settings.log_format)
    with traced("mas-worker", settings) as spans:
        try:
            anyio.run(_run, settings, classes, instances, sock, spans)
        except MasError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None


async def _run(
    settings: Settings,
    classes: list[type[Agent]],
    instances: int,
    sock: socket.socket | None,
    spans: str | None,
) -> None:
    from mas.runtime import Runtime

    runtime = Runtime(settings)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as outer:
            if sock is not None:
                from mas.monitoring.endpoint import serve_health

                # Entered before the runtime starts, left after it drained: probes and
                # scrapes get an answer (503 while not running) through start and drain.
                await outer.enter_async_context(serve_health(runtime, sock))
            await _serve(settings, runtime, classes, instances, sock, spans, signals)
    typer.echo(f"mas worker {runtime.node_id}: stopped", err=True)


async def _serve(
    settings: Settings,
    runtime: Runtime,
    classes: list[type[Agent]],
    instances: int,
    sock: socket.socket | None,
    spans: str | None,
    signals: AsyncIterator[int],
) -> None:
    from mas.orchestrator import spawner_for, spawner_type

    async with runtime, AsyncExitStack() as stack:
        node = runtime.node_id
        if settings.redis_url is not None:
            await stack.enter_async_context(_heartbeat(settings, runtime, classes))
        for cls in classes:
            for n in range(instances):
                await runtime.spawn(cls, id=f"{cls.type}-{node}-{n}")
            # POST /agents/ for this type reaches one worker's spawner.
            await runtime.spawn(spawner_for(cls), id=f"{spawner_type(cls.type)}-{node}")
        transport = settings.transport
        where = (
            masked_url(settings.amqp_url.get_secret_value())
            if transport == "rabbitmq"
            else "this process"
        )
        typer.echo(f"mas worker {node}: {transport} ({where})", err=True)
        typer.echo(
            f"  agents: {', '.join(f'{cls.type} x{instances}' for cls in classes)}", err=True
        )
        if settings.persist:
            typer.echo(
                f"  database: {masked_url(settings.database_url.get_secret_value())}",
                err=True,
            )
        if sock is not None:
            host, port = sock.getsockname()[:2]
            typer.echo(f"  metrics: http://{_url_host(host)}:{port}/metrics", err=True)
        if spans is not None:
            typer.echo(f"  traces: {spans}", err=True)
        typer.echo("  ready; SIGTERM or Ctrl-C drains and stops", err=True)
        async for signum in signals:
            typer.echo(f"mas worker {node}: {signal.Signals(signum).name}, draining", err=True)
            break


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@asynccontextmanager
async def _heartbeat(
    settings: Settings, runtime: Runtime, classes: list[type[Agent]]
) -> AsyncIterator[None]:
    """`<prefix>node:<id>` in Redis while this worker lives; stale (not an error) when down."""
    from mas.cluster import Cluster, HeartbeatLoop, key_prefix

    node = runtime.node_id
    prefix = key_prefix(settings.amqp.prefix)
    async with Cluster.from_settings(settings, prefix=prefix, node_id=node) as cluster:
        info = {"types": [cls.type for cls in classes], "pid": os.getpid()}
        async with HeartbeatLoop(
            cluster.heartbeats,
            node,
            lambda: info | {"agents": len(runtime.agents())},
            settings.heartbeat_ttl,
        ):
            yield
