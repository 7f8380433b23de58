"""`mas api`: the gateway alone, in front of workers that host the agents (`mas worker`)."""

from __future__ import annotations

from typing import Annotated

import typer

from mas.config import masked_url
from mas.errors import MasError

__all__ = ["api"]


def api(
    host: Annotated[str | None, typer.Option(metavar="HOST", help="interface to listen on")] = None,
    port: Annotated[
        int | None, typer.Option(metavar="PORT", help="port (0 picks a free one)")
    ] = None,
    agents: Annotated[
        list[str] | None,
        typer.Option(
            "--agents",
            metavar="MODULE:CLASS",
            help="agent classes POST /agents/ may start on workers (module:Class); the "
            "gateway itself runs none",
        ),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(metavar="LEVEL", help="log level (JSON on stderr)")
    ] = None,
) -> None:
    """Serve the HTTP gateway; tasks go through MAS_TRANSPORT to the workers' agents."""
    from mas.api.app import create_app
    from mas.cli.replay import load_agent_class
    from mas.cli.serving import (
        bind,
        check_broker,
        check_store,
        ensure_secret,
        load_settings,
        serve,
        traced,
    )
    from mas.observability.logging import configure_logging

    notes: list[str] = []
    overrides: dict[str, object] = {"persist": True}
    if log_level is not None:
        overrides["log_level"] = log_level
    try:
        settings = ensure_secret(load_settings(**overrides), notes, generate=False)
        classes = [load_agent_class(spec) for spec in agents or []]
    except (MasError, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if settings.transport == "memory":
        notes.append(
            "MAS_TRANSPORT=memory: no worker can reach this gateway; use `mas up` for one "
            "process, or MAS_TRANSPORT=rabbitmq with `mas worker`"
        )
    configure_logging(settings.log_level, settings.log_format)
    check_store(settings)
    check_broker(settings)
    listen_host = host or settings.api.host
    sock = bind(listen_host, settings.api.port if port is None else port)
    url = f"http://{listen_host}:{sock.getsockname()[1]}"
    typer.echo(f"mas api: {url} (docs {url}/docs)")
    typer.echo(f"  transport: {settings.transport}")
    typer.echo(f"  database:  {masked_url(settings.database_url.get_secret_value())}")
    with traced("mas-api", settings) as spans:
        if spans is not None:
            typer.echo(f"  traces:    {spans}")
        for note in notes:
            typer.echo(f"  note: {note}")
        app = create_app(settings, agent_classes=classes, host_agents=False)
        serve(app, sock, grace=settings.shutdown_timeout)
