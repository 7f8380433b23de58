"""messages record who handled them (the audit doubles as the idempotency record)

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("handled_by", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("reply", JSON_TYPE, nullable=True))
        batch_op.create_index(
            "ix_messages_handled_by_created_at", ["handled_by", "created_at"], unique=False
        )
        # What an agent received is now found by handled_by: one index less to write.
        batch_op.drop_index("ix_messages_target")


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_target", ["target"], unique=False)
        batch_op.drop_index("ix_messages_handled_by_created_at")
        batch_op.drop_column("reply")
        batch_op.drop_column("handled_by")
