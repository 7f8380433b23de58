"""the database records the oldest mas revision that runs on it (rolling upgrades)

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it


def upgrade() -> None:
    op.create_table(
        "schema_floor",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("oldest_revision", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schema_floor")),
    )


def downgrade() -> None:
    op.drop_table("schema_floor")
