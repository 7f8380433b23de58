"""durable steps of workflow handlers, read back by a re-run instead of redoing them

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "workflow_steps",
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("handler", sa.String(length=210), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("agent_id", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("result", JSON_TYPE, nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", "handler", "seq", name=op.f("pk_workflow_steps")),
    )


def downgrade() -> None:
    op.drop_table("workflow_steps")
