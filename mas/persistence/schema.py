"""Schema migrations (Alembic, shipped inside the package) run on mas's own async engine.

A rolling upgrade runs the new release's migrations while the previous release's pods still
run (and may restart). Each migration says whether the code before it still runs on the
schema it makes (`runs_with_previous_code`: adding a table, a nullable column or an index
does; dropping or renaming what older code uses does not). `upgrade` records in the
database the oldest revision whose code runs on it (`schema_floor`), so that an older mas,
which cannot know the newer migrations, can tell whether it may start (`Store.check_schema`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, delete, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncEngine

from mas.persistence.models import schema_floor

__all__ = [
    "SchemaFit",
    "alembic_config",
    "current_revision",
    "fit",
    "head_revision",
    "knows_revision",
    "oldest_compatible",
    "recorded_floor",
    "upgrade",
]

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(schema: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["schema"] = schema
    return config


def _scripts() -> ScriptDirectory:
    """The migrations mas ships, read once (each read imports every migration module)."""
    return _scripts_at(MIGRATIONS)


@functools.cache
def _scripts_at(location: Path) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(location))
    return ScriptDirectory.from_config(config)


def head_revision() -> str:
    """The revision this version of mas expects."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


SchemaFit = Literal["current", "behind", "ahead", "too_new"]
"""How this mas stands to a database: at its revision; behind it (`mas db upgrade`); ahead,
migrated by a newer mas this one still runs on; or too new for this one (upgrade mas)."""


def fit(revision: str | None, floor: str | None) -> SchemaFit:
    """How this mas stands to a database at `revision` whose recorded floor is `floor`."""
    if revision == head_revision():
        return "current"
    if revision is None or knows_revision(revision):
        return "behind"
    if floor is not None and knows_revision(floor):
        return "ahead"
    return "too_new"


def knows_revision(revision: str) -> bool:
    """Whether `revision` is one of this mas's migrations (a newer release's is not)."""
    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def oldest_compatible(revision: str) -> str:
    """The oldest revision whose code runs on a database at `revision`: the newest migration
    up to it that code before it cannot run with (the first one, when every later one can)."""
    oldest = revision
    for script in _scripts().walk_revisions(base="base", head=revision):  # newest first
        oldest = script.revision
        if not getattr(script.module, "runs_with_previous_code", False):
            break
    return oldest


async def recorded_floor(engine: AsyncEngine, schema: str | None = None) -> str | None:
    """The oldest revision whose code runs on the database, as its last `upgrade` recorded
    it (None before revision 0013, which made the record)."""

    def read(connection: Connection) -> str | None:
        if not inspect(connection).has_table(schema_floor.name, schema=schema):
            return None
        return connection.execute(select(schema_floor.c.oldest_revision)).scalar()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def current_revision(engine: AsyncEngine, schema: str | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""

    async with engine.connect() as connection:
        return await connection.run_sync(_revision_of, schema)


def _revision_of(connection: Connection, schema: str | None) -> str | None:
    context = MigrationContext.configure(
        connection, opts={"version_table_schema": schema} if schema else {}
    )
    return context.get_current_revision()


async def upgrade(engine: AsyncEngine, schema: str | None = None, revision: str = "head") -> None:
    """Migrate the database to `revision` (the newest by default); a database a newer mas
    migrated is left as it is."""

    def run(connection: Connection, config: Config) -> None:
        config.attributes["connection"] = connection
        at = _revision_of(connection, schema)
        if at is not None and not knows_revision(at):
            return  # a newer mas migrated it: nothing here to run (see Store.check_schema)
        command.upgrade(config, revision)
        _record_floor(connection, schema)

    config = alembic_config(schema)
    async with engine.begin() as connection:
        await connection.run_sync(run, config)


def _record_floor(connection: Connection, schema: str | None) -> None:
    """Write `schema_floor` for the revision the database is now at (in the migration's
    transaction: the revision and its floor change together)."""
    if not inspect(connection).has_table(schema_floor.name, schema=schema):
        return  # migrated only up to a revision before the record existed
    at = _revision_of(connection, schema)
    assert at is not None
    connection.execute(delete(schema_floor))
    connection.execute(insert(schema_floor).values(id=1, oldest_revision=oldest_compatible(at)))


def autogenerate(connection: Connection, message: str, **options: Any) -> None:
    """Write a new migration from the models (for mas developers: `mas db revision`)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=True, **options)
