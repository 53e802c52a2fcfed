"""SQLAlchemy 2.0 typed models: the schema users query directly (see docs/database.md).

High-volume tables carry no foreign keys: they would cost an index lookup per row at
10,000 rows/s and the ingest path already guarantees the device row exists.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from earwitness.cloud.db.types import (
    MYSQL_TABLE_ARGS,
    BigId,
    Blob,
    HeadBlob,
    Json,
    UtcDateTime,
)

ID_LEN = 64  # site / device / message ids, see shared.topics.ID_PATTERN
LABEL_LEN = 128
MODEL_LEN = 80


class Base(DeclarativeBase):
    pass


def table_of(model: type[Base]) -> Table:
    """The Core table of a mapped class, typed as a Table for insert()/update()."""
    return cast(Table, model.__table__)


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_site", "site"), MYSQL_TABLE_ARGS)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    site: Mapped[str] = mapped_column(String(ID_LEN))
    name: Mapped[str | None] = mapped_column(String(128))
    lat: Mapped[float | None] = mapped_column(Float(precision=53))
    lon: Mapped[float | None] = mapped_column(Float(precision=53))
    model_id: Mapped[str | None] = mapped_column(String(MODEL_LEN))
    software_version: Mapped[str | None] = mapped_column(String(40))
    first_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    last_seen: Mapped[datetime] = mapped_column(UtcDateTime())
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    status_at: Mapped[datetime | None] = mapped_column(UtcDateTime())
    config_error: Mapped[str | None] = mapped_column(Text)
    last_heartbeat: Mapped[dict[str, Any] | None] = mapped_column(Json)
    heads: Mapped[str | None] = mapped_column(String(400))  # name@sha12, comma-separated
    # An operator set name and location (PATCH /api/v1/devices/{id}): what the device
    # reports no longer overwrites them.
    pinned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Inference(Base):
    """One row per analysis window the device published."""

    __tablename__ = "inferences"
    __table_args__ = (
        Index("ix_inferences_device_time", "device_id", "window_start"),
        Index("ix_inferences_label_time", "label", "window_start"),
        # Covers the map's newest-detections query: no row lookups (migration 0010).
        Index(
            "ix_inferences_time_spot",
            "window_start",
            "top_group",
            "top_group_score",
            "device_id",
            "lat",
            "lon",
        ),
        Index("ix_inferences_group_time", "top_group", "window_start"),
        Index("ix_inferences_device_group_time", "device_id", "top_group", "window_start"),
        Index("ix_inferences_custom_time", "custom_label", "window_start"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    site: Mapped[str] = mapped_column(String(ID_LEN))
    seq: Mapped[int] = mapped_column(BigId)
    window_start: Mapped[datetime] = mapped_column(UtcDateTime())
    window_s: Mapped[float] = mapped_column(Float)
    label: Mapped[str] = mapped_column(String(LABEL_LEN))
    label_index: Mapped[int] = mapped_column(SmallInteger)
    label_mid: Mapped[str] = mapped_column(String(32))
    score: Mapped[float] = mapped_column(Float)
    top_group: Mapped[str | None] = mapped_column(String(ID_LEN))
    top_group_score: Mapped[float | None] = mapped_column(Float)
    top_k: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    group_scores: Mapped[dict[str, float]] = mapped_column(Json)
    custom: Mapped[dict[str, float] | None] = mapped_column(Json)
    # The device's best custom class at or above its head's threshold (NULL: none).
    custom_label: Mapped[str | None] = mapped_column(String(ID_LEN))
    custom_score: Mapped[float | None] = mapped_column(Float)
    dbfs: Mapped[float] = mapped_column(Float)
    leq_dbfs: Mapped[float | None] = mapped_column(Float)
    inference_ms: Mapped[float] = mapped_column(Float)
    model_id: Mapped[str] = mapped_column(String(MODEL_LEN))
    lat: Mapped[float | None] = mapped_column(Float(precision=53))
    lon: Mapped[float | None] = mapped_column(Float(precision=53))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    # Filled later by the second-opinion worker (the prototype's `second_inference`).
    second_label: Mapped[str | None] = mapped_column(String(LABEL_LEN))
    second_score: Mapped[float | None] = mapped_column(Float)
    second_agree: Mapped[bool | None] = mapped_column(Boolean)
    # Human review from the web UI: True = correct, False = wrong.
    review: Mapped[bool | None] = mapped_column(Boolean)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_device_time", "device_id", "started_at"),
        Index("ix_events_label_time", "label", "started_at"),
        Index("ix_events_event", "event_id"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    event_id: Mapped[str] = mapped_column(String(ID_LEN))
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    site: Mapped[str] = mapped_column(String(ID_LEN))
    seq: Mapped[int] = mapped_column(BigId)
    phase: Mapped[str] = mapped_column(String(8))
    label: Mapped[str] = mapped_column(String(LABEL_LEN))
    group_name: Mapped[str | None] = mapped_column(String(ID_LEN))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    duration_s: Mapped[float] = mapped_column(Float)
    peak_score: Mapped[float] = mapped_column(Float)
    windows: Mapped[int] = mapped_column(Integer)
    peak_dbfs: Mapped[float] = mapped_column(Float)
    lat: Mapped[float | None] = mapped_column(Float(precision=53))
    lon: Mapped[float | None] = mapped_column(Float(precision=53))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Clip(Base):
    """Clip metadata; the audio itself is in the clip store under ``storage_key``.

    Also the second-opinion work queue: ``status`` pending -> claimed -> done | failed.
    """

    __tablename__ = "clips"
    __table_args__ = (
        Index("ix_clips_device_time", "device_id", "started_at"),
        Index("ix_clips_queue", "status", "lease_until"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    clip_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    site: Mapped[str] = mapped_column(String(ID_LEN))
    seq: Mapped[int] = mapped_column(BigId)
    reason: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    window_start: Mapped[datetime] = mapped_column(UtcDateTime())
    duration_s: Mapped[float] = mapped_column(Float)
    sample_rate: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(String(255))
    edge_label: Mapped[str] = mapped_column(String(LABEL_LEN))
    edge_label_index: Mapped[int] = mapped_column(SmallInteger)
    edge_score: Mapped[float] = mapped_column(Float)
    edge_top_k: Mapped[list[dict[str, Any]]] = mapped_column(Json)
    edge_groups: Mapped[dict[str, float]] = mapped_column(Json)
    model_id: Mapped[str] = mapped_column(String(MODEL_LEN))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    worker: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)


class SecondOpinion(Base):
    __tablename__ = "second_opinions"
    __table_args__ = (
        UniqueConstraint("clip_id", "backend", name="uq_second_opinions_clip_backend"),
        Index("ix_second_opinions_edge_label", "edge_label"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    clip_id: Mapped[int] = mapped_column(ForeignKey("clips.id", ondelete="CASCADE"))
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    backend: Mapped[str] = mapped_column(String(32))
    model_id: Mapped[str] = mapped_column(String(MODEL_LEN))
    label: Mapped[str] = mapped_column(String(LABEL_LEN))
    label_index: Mapped[int | None] = mapped_column(SmallInteger)
    score: Mapped[float] = mapped_column(Float)
    group_scores: Mapped[dict[str, float]] = mapped_column(Json)
    edge_label: Mapped[str] = mapped_column(String(LABEL_LEN))
    edge_score: Mapped[float] = mapped_column(Float)
    edge_group: Mapped[str | None] = mapped_column(String(ID_LEN))
    top1_agree: Mapped[bool] = mapped_column(Boolean)
    group_agree: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Heartbeat(Base):
    __tablename__ = "heartbeats"
    __table_args__ = (Index("ix_heartbeats_device_time", "device_id", "ts"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    seq: Mapped[int] = mapped_column(BigId)
    ts: Mapped[datetime] = mapped_column(UtcDateTime())
    uptime_s: Mapped[float] = mapped_column(Float)
    windows_dropped: Mapped[int] = mapped_column(BigId)
    outbox_rows: Mapped[int] = mapped_column(BigId)
    outbox_dropped: Mapped[int] = mapped_column(BigId)
    clips_blocked_privacy: Mapped[int] = mapped_column(BigId)
    cpu_temp_c: Mapped[float | None] = mapped_column(Float)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class DeadLetter(Base):
    """Anything that could not be stored, with the reason: nothing vanishes silently."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_time", "received_at"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    payload: Mapped[bytes] = mapped_column(Blob)
    payload_size: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AckWatermark(Base):
    """Highest seq per device and outbox epoch below which everything is committed."""

    __tablename__ = "ack_watermarks"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    device_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigId, default=-1)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class PendingSeq(Base):
    """Committed seqs above the watermark, as runs ``seq..seq_end`` (one row per contiguous
    run in a batch, not one per message); gone once the watermark passes them."""

    __tablename__ = "pending_seqs"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    device_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32), primary_key=True)
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    seq_end: Mapped[int] = mapped_column(BigInteger)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_used: Mapped[datetime | None] = mapped_column(UtcDateTime())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class Review(Base):
    """A person's verdict on a detection (web UI, admin scope)."""

    __tablename__ = "reviews"
    __table_args__ = (Index("ix_reviews_inference", "inference_id"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    inference_id: Mapped[int] = mapped_column(BigId)
    correct: Mapped[bool] = mapped_column(Boolean)
    reviewer: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())


class Alert(Base):
    """An incident a rule found (cloud/alerts). ``fingerprint`` names it by the rule and
    the first detection that completed it: the same evidence never makes two alerts, on
    two alert replicas or after a restart."""

    __tablename__ = "alerts"
    __table_args__ = (
        Index("ix_alerts_time", "started_at"),
        Index("ix_alerts_state_time", "state", "started_at"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(200), unique=True)
    rule: Mapped[str] = mapped_column(String(ID_LEN))
    severity: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(ID_LEN))
    device_id: Mapped[str] = mapped_column(String(ID_LEN))  # the first evidence's device
    labels: Mapped[str] = mapped_column(String(400))  # the classes seen, comma-separated
    started_at: Mapped[datetime] = mapped_column(UtcDateTime())
    last_evidence_at: Mapped[datetime] = mapped_column(UtcDateTime())
    lat: Mapped[float | None] = mapped_column(Float(precision=53))
    lon: Mapped[float | None] = mapped_column(Float(precision=53))
    state: Mapped[str] = mapped_column(String(16))  # open, acknowledged, resolved, false_alarm
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)


class AlertEvidence(Base):
    """The detections behind an alert (one row per device event)."""

    __tablename__ = "alert_evidence"
    __table_args__ = (
        UniqueConstraint("alert_id", "evidence_key", name="uq_alert_evidence"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigId)
    evidence_key: Mapped[str] = mapped_column(String(140))  # device/event_id
    event_row_id: Mapped[int] = mapped_column(BigId)
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    label: Mapped[str] = mapped_column(String(LABEL_LEN))
    score: Mapped[float] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(UtcDateTime())
    lat: Mapped[float | None] = mapped_column(Float(precision=53))
    lon: Mapped[float | None] = mapped_column(Float(precision=53))


class Notification(Base):
    """One alert to one channel: sent once, retried with backoff, dead after N tries."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("alert_id", "channel", name="uq_notification"),
        Index("ix_notifications_due", "status", "next_at"),
        MYSQL_TABLE_ARGS,
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(BigId)
    channel: Mapped[str] = mapped_column(String(80))  # webhook:<name>, mqtt, email
    status: Mapped[str] = mapped_column(String(8))  # pending, sent, dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_at: Mapped[datetime] = mapped_column(UtcDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime())


class AlertCursor(Base):
    """How far the alert engine has read the events table (per engine name)."""

    __tablename__ = "alert_cursors"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    name: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    event_id: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())


class AlertRule(Base):
    """A rule made through the API (``PUT /api/v1/alert-rules/{name}``); the alert service
    runs these beside the rules in its settings file. ``definition`` is the rule without
    its name, as the API validated it; the service validates it again when it loads it."""

    __tablename__ = "alert_rules"
    __table_args__ = (MYSQL_TABLE_ARGS,)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_by: Mapped[str | None] = mapped_column(String(128))


class HeadArtifact(Base):
    """A custom head uploaded for devices (`earwitness heads upload`); remote configs name
    it by ``sha256`` (of the file), inline or by URL."""

    __tablename__ = "head_artifacts"
    __table_args__ = (Index("ix_head_artifacts_name", "name", "uploaded_at"), MYSQL_TABLE_ARGS)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(ID_LEN))
    head_id: Mapped[str] = mapped_column(String(80))  # name@sha12 of the document
    classes: Mapped[str] = mapped_column(String(400))
    model_id: Mapped[str] = mapped_column(String(MODEL_LEN))
    size_bytes: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(HeadBlob)
    uploaded_at: Mapped[datetime] = mapped_column(UtcDateTime())
    uploaded_by: Mapped[str | None] = mapped_column(String(128))
