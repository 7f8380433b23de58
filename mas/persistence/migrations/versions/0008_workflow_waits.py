"""parked handlers waiting for a task's signal

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it


def upgrade() -> None:
    op.create_table(
        "workflow_waits",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "name", "message_id", name=op.f("pk_workflow_waits")),
    )


def downgrade() -> None:
    op.drop_table("workflow_waits")
