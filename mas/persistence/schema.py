"""Schema migrations (Alembic, shipped inside the package) run on mas's own async engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(schema: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["schema"] = schema
    return config


def head_revision() -> str:
    """The revision this version of mas expects."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


async def current_revision(engine: AsyncEngine, schema: str | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(
            connection, opts={"version_table_schema": schema} if schema else {}
        )
        return context.get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


async def upgrade(engine: AsyncEngine, schema: str | None = None, revision: str = "head") -> None:
    """Migrate the database to `revision` (the newest by default)."""

    def run(connection: Connection, config: Config) -> None:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    config = alembic_config(schema)
    async with engine.begin() as connection:
        await connection.run_sync(run, config)


def autogenerate(connection: Connection, message: str, **options: Any) -> None:
    """Write a new migration from the models (for mas developers: `mas db revision`)."""
    config = alembic_config()
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=True, **options)
