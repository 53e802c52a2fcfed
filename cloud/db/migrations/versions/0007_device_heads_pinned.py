"""devices.heads (what the device reports running) and devices.pinned (an operator's name
and location win over what the device reports)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 03:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("devices", sa.Column("heads", sa.String(400), nullable=True))
    op.add_column(
        "devices",
        sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("pinned")
        batch_op.drop_column("heads")
