"""`mas db upgrade | current`: the database schema, migrated by the migrations mas ships."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
import typer
from pydantic import SecretStr

from mas.config import Settings
from mas.errors import MasError

app = typer.Typer(
    help="Database schema: migrate it and show where it is.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

UrlOption = Annotated[
    str | None,
    typer.Option("--url", metavar="URL", help="database URL (default: MAS_DATABASE_URL)"),
]


def _settings(url: str | None) -> Settings:
    from mas.cli.serving import load_settings

    settings = load_settings()
    if url is not None:
        settings = settings.model_copy(update={"database_url": SecretStr(url)})
    return settings


def _run(work: Callable[[], Awaitable[None]]) -> None:
    try:
        anyio.run(work)
    except MasError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def upgrade(url: UrlOption = None) -> None:
    """Migrate the database to the schema this mas needs."""
    from mas.persistence import open_store
    from mas.persistence.schema import head_revision

    async def work() -> None:
        store = await open_store(_settings(url), migrate=True)
        try:
            revision = await store.revision()
            typer.echo(f"{store.url}: at revision {revision} (head {head_revision()})")
        finally:
            await store.close()

    _run(work)


@app.command()
def current(url: UrlOption = None) -> None:
    """Show the database's schema revision and whether it is up to date."""
    from mas.persistence.engine import connect, display_url
    from mas.persistence.schema import (
        current_revision,
        head_revision,
        knows_revision,
        recorded_floor,
    )

    settings = _settings(url)

    async def work() -> None:
        schema = settings.database_schema
        engine = await connect(settings.database_url.get_secret_value(), schema=schema)
        try:
            revision = await current_revision(engine, schema)
            floor = await recorded_floor(engine, schema)
        finally:
            await engine.dispose()
        head = head_revision()
        runs = revision == head
        if runs:
            state = "up to date"
        elif revision is None or knows_revision(revision):
            state = "behind: run `mas db upgrade`"
        elif floor is not None and knows_revision(floor):
            state = f"ahead: a newer mas migrated it; this one runs on it (from {floor} on)"
            runs = True
        else:
            state = f"ahead: it runs mas from revision {floor or 'unknown'} on: upgrade mas"
        where = display_url(engine.url)
        typer.echo(f"{where}: revision {revision or 'none'}, head {head} ({state})")
        if not runs:
            raise typer.Exit(2)

    _run(work)


@app.command()
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than", metavar="AGE", help="age to keep: seconds, or 30m, 12h, 7d, ..."
        ),
    ],
    audit: Annotated[bool, typer.Option(help="also delete audited messages that old")] = False,
    tasks: Annotated[bool, typer.Option(help="also delete finished tasks that old")] = False,
    url: UrlOption = None,
) -> None:
    """Delete old idempotency marks (and, if asked, audit rows and finished tasks)."""
    from datetime import UTC, datetime, timedelta

    from mas.cli.token import parse_ttl
    from mas.persistence import open_store

    before = datetime.now(UTC) - timedelta(seconds=parse_ttl(older_than))

    async def work() -> None:
        store = await open_store(_settings(url))
        try:
            counts = await store.prune(before, audit=audit, tasks_too=tasks)
        finally:
            await store.close()
        deleted = ", ".join(f"{table}: {count}" for table, count in counts.items())
        typer.echo(f"{store.url}: deleted rows older than {before.isoformat()} ({deleted})")

    _run(work)
