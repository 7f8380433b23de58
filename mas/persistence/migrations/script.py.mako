"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}
# Does the previous release still run on the schema this makes? Adding a table, a nullable
# column or an index: True. Dropping, renaming or tightening what it uses: False, and the
# previous release's pods stop at their next start (mas.persistence.schema).
runs_with_previous_code = None  # say True or False: the tests refuse a migration without it


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "pass"}
