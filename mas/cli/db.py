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
def current(
    url: UrlOption = None,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            metavar="SECONDS",
            min=0,
            help="wait this long for a schema this mas runs on (a pod's init container, "
            "while the migration Job runs); the database may be away meanwhile",
        ),
    ] = 0.0,
) -> None:
    """Show the database's schema revision and whether this mas runs on it (exit 2: not)."""
    from sqlalchemy.exc import SQLAlchemyError

    from mas.persistence.engine import connect, display_url
    from mas.persistence.schema import current_revision, fit, head_revision, recorded_floor

    settings = _settings(url)
    schema = settings.database_schema
    head = head_revision()

    async def look() -> tuple[str, bool | None]:
        """What to say of the database, and whether this mas runs on it (None: not yet)."""
        engine = await connect(settings.database_url.get_secret_value(), schema=schema)
        try:
            revision = await current_revision(engine, schema)
            floor = await recorded_floor(engine, schema)
        finally:
            await engine.dispose()
        state, runs = {
            "current": ("up to date", True),
            "behind": ("behind: run `mas db upgrade`", None),
            "ahead": (f"ahead: a newer mas migrated it; this one runs on it from {floor}", True),
            "too_new": (f"ahead: it runs mas from revision {floor or '?'} on: upgrade mas", False),
        }[fit(revision, floor)]
        where = display_url(engine.url)
        return f"{where}: revision {revision or 'none'}, head {head} ({state})", runs

    async def work() -> None:
        deadline = anyio.current_time() + wait
        said = ""
        while True:
            try:
                line, runs = await look()
            except (MasError, SQLAlchemyError, OSError) as exc:
                if wait == 0:
                    raise
                line, runs = f"database unreachable: {exc}", None
            if runs is not None or anyio.current_time() >= deadline:
                typer.echo(line)
                if not runs:
                    raise typer.Exit(2)
                return
            if line != said:
                typer.echo(f"waiting: {line}", err=True)
                said = line
            await anyio.sleep(min(2.0, deadline - anyio.current_time()))  # polling pace

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
