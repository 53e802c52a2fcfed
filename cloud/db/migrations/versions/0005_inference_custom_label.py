"""inferences.custom_label / custom_score: the best custom-head class the device detected

Custom heads (`earwitness train`) add classes such as scream or glass_break. The device
decides with the head's calibrated thresholds; the best detected class and its score
become indexed columns so "every scream this week" is an index range, not a JSON scan.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


# Frozen copy of 0001's compatibility view: SQLite drops columns by rebuilding the table,
# which a view over it would block.
_AUDIO_INGESTION_VIEW = """
CREATE VIEW audio_ingestion AS
SELECT
    i.id AS id,
    i.label AS inference,
    i.second_label AS second_inference,
    i.inference_ms AS inference_yamnet_time,
    i.lat AS lat,
    i.lon AS `long`,
    i.window_start AS sensor_current_time,
    i.received_at AS `datetime`,
    i.device_id AS device_id
FROM inferences i
"""


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild): instant on MariaDB and SQLite alike.
    op.add_column("inferences", sa.Column("custom_label", sa.String(64), nullable=True))
    op.add_column("inferences", sa.Column("custom_score", sa.Float(), nullable=True))
    op.create_index("ix_inferences_custom_time", "inferences", ["custom_label", "window_start"])


def downgrade() -> None:
    op.drop_index("ix_inferences_custom_time", table_name="inferences")
    op.execute("DROP VIEW IF EXISTS audio_ingestion")
    with op.batch_alter_table("inferences", schema=None) as batch_op:
        batch_op.drop_column("custom_score")
        batch_op.drop_column("custom_label")
    op.execute(_AUDIO_INGESTION_VIEW)
