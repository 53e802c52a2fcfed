"""inferences partitioned by month on MySQL/MariaDB (retention drops whole months); the
primary and idempotency keys gain window_start, as partitioning requires

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 01:00:00

On a large existing table this rewrites it once (minutes per 10 M rows): run it in a
maintenance window. SQLite: nothing changes.
"""

from __future__ import annotations

from alembic import op

from earwitness.cloud.db import partitions

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    partitions.partition_table(op.get_bind())


def downgrade() -> None:
    partitions.unpartition_table(op.get_bind())
