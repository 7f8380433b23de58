"""Schema migrations: opening a Store migrates or refuses, and `mas db current | upgrade`.

A user relies on three things: `migrate=True` brings an empty database to the revision this
mas ships; a database that was not migrated is refused with a message that says what to run;
and the `mas db` commands report and fix that from a shell, with exit codes scripts can use.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from pathlib import Path

import anyio
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from agents.echo import EchoAgent
from mas.errors import SchemaOutdated
from mas.persistence import Store, schema
from mas.persistence.models import Base
from mas.persistence.schema import alembic_config, head_revision, oldest_compatible, recorded_floor
from mas.testing import TestRuntime
from tests.integration.pg_support import PgSchema
from tests.unit.persistence.databases import Database

pytestmark = pytest.mark.anyio

TABLES = {"agents", "tasks", "messages", "processed_messages", "outbox", "dead_letters"}


async def table_names(store: Store) -> set[str]:
    async with store.engine.connect() as connection:
        names = await connection.run_sync(
            lambda sync: inspect(sync).get_table_names(schema=store.schema)
        )
    return set(names)


def mas_db_argv(command: str, db: Database, *options: str) -> list[str]:
    return [sys.executable, "-m", "mas.cli", "db", command, "--url", db.url, *options]


def mas_db_env(db: Database) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAS_DATABASE")}
    return env | db.cli_env()


async def mas_db(command: str, db: Database, *options: str) -> tuple[int, str]:
    """Run `python -m mas.cli db <command>` against `db`; returns (exit code, output)."""
    result = await anyio.run_process(
        mas_db_argv(command, db, *options), env=mas_db_env(db), check=False
    )
    return result.returncode, (result.stdout + result.stderr).decode()


async def test_migrate_creates_the_tables_at_the_head_revision(db: Database) -> None:
    store = await db.open_store(migrate=True)
    try:
        assert await table_names(store) >= TABLES
        assert await store.revision() == head_revision()
    finally:
        await store.close()


async def test_the_migrations_build_what_the_models_declare(db: Database) -> None:
    """A model changed without its migration (or the reverse) shows here, not in production:
    Alembic's autogenerate comparison finds nothing to add, drop or alter."""
    store = await db.open_store(migrate=True)
    try:
        async with store.reading() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await store.close()
    assert differences == []


async def test_migrating_twice_is_harmless_and_keeps_the_rows(db: Database) -> None:
    store = await db.open_store(migrate=True)
    try:
        await store.create_task("t-1", "echo", {"x": 1})
    finally:
        await store.close()
    again = await db.open_store(migrate=True)
    try:
        assert await again.revision() == head_revision()
        task = await again.get_task("t-1")
        assert task is not None and task.payload == {"x": 1}
    finally:
        await again.close()


async def test_an_unmigrated_database_is_refused_with_the_command_to_run(db: Database) -> None:
    with pytest.raises(SchemaOutdated, match="mas db upgrade") as caught:
        await db.open_store(migrate=False)
    assert head_revision() in str(caught.value)


async def test_sqlite_migrates_itself_by_default(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    try:
        assert await store.revision() == head_revision()
    finally:
        await store.close()


@pytest.mark.integration
async def test_postgresql_is_checked_not_migrated_by_default(pg_schema: PgSchema) -> None:
    with pytest.raises(SchemaOutdated, match="mas db upgrade"):
        await Store.open(pg_schema.url, schema=pg_schema.schema)


async def test_mas_db_current_says_behind_until_mas_db_upgrade_runs(db: Database) -> None:
    code, output = await mas_db("current", db)
    assert code == 2, output
    assert "behind" in output
    assert "mas db upgrade" in output

    code, output = await mas_db("upgrade", db)
    assert code == 0, output
    assert head_revision() in output

    code, output = await mas_db("current", db)
    assert code == 0, output
    assert "up to date" in output
    assert "behind" not in output


@pytest.mark.integration
async def test_a_persisting_runtime_refuses_to_start_on_an_unmigrated_postgresql_schema(
    pg_schema: PgSchema,
) -> None:
    runtime = TestRuntime(
        database_url=pg_schema.url, database_schema=pg_schema.schema, persist=True
    )
    with pytest.raises(SchemaOutdated, match="mas db upgrade"):
        async with runtime:
            pass


async def test_a_persisting_runtime_migrates_a_new_sqlite_database_itself(sqlite_url: str) -> None:
    async with TestRuntime(database_url=sqlite_url, persist=True) as rt:
        await rt.spawn(EchoAgent, id="e")
        await rt.settle()
    store = await Store.open(sqlite_url, migrate=False)
    try:
        assert await store.revision() == head_revision()
        assert await store.get_agent("e") is not None
    finally:
        await store.close()


# -- rolling upgrades: an older release on a schema a newer one migrated ---------------------

FUTURE = "9999"  # a revision a newer release made: this mas has no such migration


async def _as_if_migrated_by_a_newer_release(store: Store, floor: str) -> None:
    """Stamp the database with a revision this mas does not know, and the floor a newer
    release's `mas db upgrade` would have recorded."""
    async with store.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": FUTURE})
        await connection.execute(text("UPDATE schema_floor SET oldest_revision = :v"), {"v": floor})


def test_every_migration_says_whether_the_previous_release_runs_on_it() -> None:
    scripts = ScriptDirectory.from_config(alembic_config())
    undeclared = [
        script.revision
        for script in scripts.walk_revisions()
        if not isinstance(getattr(script.module, "runs_with_previous_code", None), bool)
    ]
    assert undeclared == []


def test_the_floor_is_the_newest_migration_older_code_cannot_run_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert oldest_compatible(head_revision()) == "0001"  # every later migration only adds
    copy = tmp_path / "migrations"
    shutil.copytree(schema.MIGRATIONS, copy)
    [breaking] = (copy / "versions").glob("0010_*.py")
    breaking.write_text(
        breaking.read_text().replace(
            "runs_with_previous_code = True", "runs_with_previous_code = False"
        )
    )
    monkeypatch.setattr(schema, "MIGRATIONS", copy)
    assert oldest_compatible(head_revision()) == "0010"
    assert oldest_compatible("0009") == "0001"


async def test_upgrade_records_the_oldest_revision_that_runs_on_the_schema(
    db: Database,
) -> None:
    store = await db.open_store(migrate=True)
    try:
        assert await recorded_floor(store.engine, store.schema) == oldest_compatible(
            head_revision()
        )
    finally:
        await store.close()


async def test_a_release_runs_on_a_newer_schema_whose_migrations_let_it(
    db: Database, log_lines: io.StringIO
) -> None:
    store = await db.open_store(migrate=True)
    await _as_if_migrated_by_a_newer_release(store, floor=head_revision())
    await store.close()
    for migrate in (False, True):  # `mas db upgrade` of the older release leaves it alone
        again = await db.open_store(migrate=migrate)
        try:
            assert await again.revision() == FUTURE
        finally:
            await again.close()
    assert '"event": "schema_ahead"' in log_lines.getvalue()
    code, output = await mas_db("current", db)
    assert code == 0, output
    assert "ahead" in output


async def test_a_release_refuses_a_newer_schema_it_cannot_run_on(db: Database) -> None:
    store = await db.open_store(migrate=True)
    await _as_if_migrated_by_a_newer_release(store, floor="9998")
    await store.close()
    for migrate in (False, True):
        with pytest.raises(SchemaOutdated, match=r"newer than this mas's .*upgrade mas"):
            await db.open_store(migrate=migrate)
    code, output = await mas_db("current", db)
    assert code == 2, output
    assert "upgrade mas" in output


async def test_mas_db_current_wait_returns_once_the_migration_ran(db: Database) -> None:
    """A pod's init container: it waits while the migration Job has not run yet."""
    async with await anyio.open_process(
        mas_db_argv("current", db, "--wait", "120"), env=mas_db_env(db)
    ) as waiter:
        assert waiter.stderr is not None and waiter.stdout is not None
        said = b""
        with anyio.fail_after(60):
            while b"waiting:" not in said:
                said += await waiter.stderr.receive()
        assert b"behind" in said
        code, output = await mas_db("upgrade", db)
        assert code == 0, output
        with anyio.fail_after(60):
            assert await waiter.wait() == 0
        answer = await waiter.stdout.receive()
    assert b"up to date" in answer


async def test_mas_db_current_wait_gives_up_in_time_and_at_once_on_a_too_new_schema(
    db: Database,
) -> None:
    code, output = await mas_db("current", db, "--wait", "1")
    assert code == 2, output
    assert "behind" in output
    store = await db.open_store(migrate=True)
    await _as_if_migrated_by_a_newer_release(store, floor="9998")
    await store.close()
    with anyio.fail_after(60):  # not the 600 s asked: waiting cannot help
        code, output = await mas_db("current", db, "--wait", "600")
    assert code == 2, output
    assert "upgrade mas" in output


async def test_mas_db_current_wait_outlasts_an_unreachable_database() -> None:
    nowhere = Database("postgresql", "postgresql+asyncpg://postgres@127.0.0.1:1/test")
    code, output = await mas_db("current", nowhere, "--wait", "1")
    assert code == 2, output
    assert "database unreachable" in output
    assert "Traceback" not in output
