"""processed message ids are looked up by id alone (a redelivered message on another node)

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None
runs_with_previous_code = True  # adds only: the previous release runs on it


def upgrade() -> None:
    op.create_index(
        "ix_processed_messages_message_id", "processed_messages", ["message_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_processed_messages_message_id", table_name="processed_messages")
