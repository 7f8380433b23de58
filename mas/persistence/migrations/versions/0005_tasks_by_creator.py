"""tasks are listed by their creator (a caller sees its own tasks)

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it


def upgrade() -> None:
    op.create_index(
        "ix_tasks_created_by_created_at", "tasks", ["created_by", "created_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_created_by_created_at", table_name="tasks")
