"""Alembic environment: runs on the connection mas hands it (see mas.persistence.schema)."""

from __future__ import annotations

from alembic import context

from mas.persistence.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - mas always passes its own connection
    raise RuntimeError("run migrations through `mas db upgrade`, not the alembic command")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table_schema=context.config.attributes.get("schema"),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
