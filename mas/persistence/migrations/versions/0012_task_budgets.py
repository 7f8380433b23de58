"""a task may carry a budget for model calls, and counts what they spent

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("budget_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("budget_cost", sa.Float(), nullable=True))
        batch.add_column(sa.Column("spent_tokens", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("spent_cost", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("spent_cost")
        batch.drop_column("spent_tokens")
        batch.drop_column("budget_cost")
        batch.drop_column("budget_tokens")
