"""inferences: the time index covers what the map reads

The map's data request takes the newest detections in the time range (up to
``web.map_detections_limit``, 100,000) and groups them by device, location and group. On
(window_start) alone each of those rows was a primary-key lookup to test its group and
score and read its device and location: 300,000 pages for 100,000 rows. With those
columns in the index the query reads the index only (346 pages; bench_web). The new index
starts with window_start, so every query that used the old one uses it, and the old one
is dropped rather than kept beside it (one index to write per row, not two).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 07:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

COLUMNS = ["window_start", "top_group", "top_group_score", "device_id", "lat", "lon"]


def upgrade() -> None:
    # Create before drop: queries on time keep an index while the new one builds.
    op.create_index("ix_inferences_time_spot", "inferences", COLUMNS)
    op.drop_index("ix_inferences_time", table_name="inferences")


def downgrade() -> None:
    op.create_index("ix_inferences_time", "inferences", ["window_start"])
    op.drop_index("ix_inferences_time_spot", table_name="inferences")
