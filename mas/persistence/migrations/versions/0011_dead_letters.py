"""dead letters kept as data: listed, replayed or discarded by an operator

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("message", JSON_TYPE, nullable=False),
        sa.Column("target", sa.String(length=300), nullable=False),
        sa.Column("message_type", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=200), nullable=True),
        sa.Column("error", JSON_TYPE, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("trace_id", sa.String(length=64), nullable=True),
        sa.Column("node_id", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("replayed_as", sa.String(length=64), nullable=True),
        sa.Column("settled_by", sa.String(length=200), nullable=True),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    for columns in (["target"], ["reason"], ["agent_id"], ["task_id"]):
        op.create_index(f"ix_dead_letters_{columns[0]}", "dead_letters", columns)
    op.create_index("ix_dead_letters_status_created_at", "dead_letters", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("dead_letters")
