"""alerts, alert_evidence, notifications, alert_cursors

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 12:30:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from earwitness.cloud.db.types import UtcDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_TABLE: dict[str, Any] = {
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_unicode_ci",
    "mariadb_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
    "mysql_engine": "InnoDB",
}


def _id() -> sa.Column[Any]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        autoincrement=True,
        nullable=False,
    )


def _big(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "alerts",
        _id(),
        sa.Column("fingerprint", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("labels", sa.String(400), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("last_evidence_at", UtcDateTime(), nullable=False),
        sa.Column("lat", sa.Float(precision=53), nullable=True),
        sa.Column("lon", sa.Float(precision=53), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
        **_TABLE,
    )
    op.create_index("ix_alerts_time", "alerts", ["started_at"])
    op.create_index("ix_alerts_state_time", "alerts", ["state", "started_at"])
    op.create_table(
        "alert_evidence",
        _id(),
        _big("alert_id"),
        sa.Column("evidence_key", sa.String(140), nullable=False),
        _big("event_row_id"),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("label", sa.String(128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("lat", sa.Float(precision=53), nullable=True),
        sa.Column("lon", sa.Float(precision=53), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id", "evidence_key", name="uq_alert_evidence"),
        **_TABLE,
    )
    op.create_table(
        "notifications",
        _id(),
        _big("alert_id"),
        sa.Column("channel", sa.String(80), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", UtcDateTime(), nullable=False),
        sa.Column("lease_until", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("sent_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("alert_id", "channel", name="uq_notification"),
        **_TABLE,
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_at"])
    op.create_table(
        "alert_cursors",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        **_TABLE,
    )


def downgrade() -> None:
    op.drop_table("alert_cursors")
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_table("notifications")
    op.drop_table("alert_evidence")
    op.drop_index("ix_alerts_state_time", table_name="alerts")
    op.drop_index("ix_alerts_time", table_name="alerts")
    op.drop_table("alerts")
