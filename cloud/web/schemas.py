"""Response models of /api/v1: what each field is, in /openapi.json, and one place that
turns a database row into what the API sends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    computed_field,
)

from earwitness.cloud.alerts.rules import RuleBody

# ISO 8601 with the UTC offset spelled "+00:00", as the API has always sent it.
Timestamp = Annotated[datetime, PlainSerializer(lambda d: d.isoformat(), return_type=str)]


class _FromRow(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class HealthOut(BaseModel):
    ok: bool
    schema_: str | None = Field(
        serialization_alias="schema", description="the database's Alembic revision"
    )


class DeviceOut(_FromRow):
    id: str = Field(description="device id, unique in the fleet")
    site: str
    name: str | None = None
    heads: str | None = Field(None, description="custom heads the device runs (name@sha12, ...)")
    pinned: bool = Field(False, description="name and location set by an operator")
    lat: float | None = None
    lon: float | None = None
    model_id: str | None = Field(None, description="the model the device runs")
    software_version: str | None = None
    first_seen: Timestamp
    last_seen: Timestamp
    online: bool = Field(description="from the retained status and last will")
    config_error: str | None = Field(None, description="why the last remote config was refused")
    last_heartbeat: dict[str, Any] | None = Field(
        None, description="the newest heartbeat's payload"
    )


class HeartbeatOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # the heartbeat's own fields follow ts
    ts: Timestamp


class DeviceDetailOut(DeviceOut):
    heartbeats: list[HeartbeatOut] = Field(description="the latest heartbeats, newest first")


class InferenceOut(_FromRow):
    id: int
    message_id: str
    device_id: str
    site: str
    seq: int
    window_start: Timestamp
    window_s: float
    label: str = Field(description="top-1 AudioSet class (display name)")
    label_index: int
    score: float
    top_group: str | None = Field(description="label group with the highest score")
    top_group_score: float | None
    top_k: Any = Field(description="the top classes with their scores")
    group_scores: Any = Field(description="score per label group")
    custom: Any = Field(None, description="custom heads' score per class, if the device runs any")
    custom_label: str | None = Field(
        None, description="best custom class at or above its head's threshold"
    )
    custom_score: float | None = None
    dbfs: float
    leq_dbfs: float | None
    inference_ms: float
    model_id: str
    lat: float | None
    lon: float | None
    received_at: Timestamp
    second_label: str | None = Field(description="the second opinion's top-1, once scored")
    second_score: float | None
    second_agree: bool | None
    review: bool | None = Field(description="a person's verdict, if any")


class InferencePage(BaseModel):
    items: list[InferenceOut]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class ReviewOut(BaseModel):
    inference_id: int
    review: bool


class EventOut(_FromRow):
    id: int
    event_id: str
    device_id: str
    phase: str = Field(description="start, update or end")
    label: str
    group: str | None = Field(validation_alias=AliasChoices("group_name", "group"))
    started_at: Timestamp
    duration_s: float
    peak_score: float
    windows: int
    peak_dbfs: float
    lat: float | None
    lon: float | None


class ClipOut(_FromRow):
    id: int
    clip_id: str
    device_id: str
    reason: str
    event_id: str | None
    started_at: Timestamp
    duration_s: float
    size_bytes: int
    sha256: str
    edge_label: str
    edge_score: float
    status: str = Field(description="second-opinion queue state")

    @computed_field(description="where to fetch the FLAC audio")  # type: ignore[prop-decorator]
    @property
    def audio_url(self) -> str:
        return f"/api/v1/clips/{self.id}/audio"


class OpinionOut(_FromRow):
    clip_id: int
    device_id: str
    backend: str
    label: str
    score: float
    edge_label: str | None
    edge_score: float | None
    top1_agree: bool
    group_agree: bool | None
    created_at: Timestamp


class TrustOut(BaseModel):
    key: str = Field(description="edge label or device")
    n: int = Field(description="clips with a second opinion")
    agree: int
    rate: float
    ci95: list[float] = Field(description="95 % Wilson interval of the agreement rate")
    reviewed: int
    reviewed_correct: int


class HourCountOut(BaseModel):
    hour: str
    label: str
    count: int


class DeviceCountOut(BaseModel):
    device_id: str
    count: int
    last: str | None


class MapDetectionOut(BaseModel):
    id: int
    device_id: str
    lat: float
    lon: float
    group: str
    score: float
    label: str


class MapUpdatesOut(BaseModel):
    items: list[MapDetectionOut]
    last_id: int = Field(description="pass as ?after_id= next time")
    devices: list[DeviceOut] = Field(
        default_factory=list, description="devices seen or changed since ?since="
    )
    now: Timestamp = Field(description="pass as ?since= next time")


def _comma_list(value: Any) -> Any:
    return [v for v in value.split(",") if v] if isinstance(value, str) else value


class AlertEvidenceOut(_FromRow):
    device_id: str
    label: str = Field(description="the class the device detected")
    score: float
    at: Timestamp = Field(description="when the device's event started")
    lat: float | None
    lon: float | None
    event_row_id: int = Field(description="the events row (GET /api/v1/events)")
    clip_ids: list[int] = Field(
        default_factory=list, description="clips of that event: /api/v1/clips/{id}/audio"
    )


class NotificationOut(_FromRow):
    channel: str = Field(description="webhook:<name>, email or mqtt")
    status: str = Field(description="pending, sent or dead (gave up after max_attempts)")
    attempts: int
    next_at: Timestamp
    last_error: str | None
    sent_at: Timestamp | None


class AlertOut(_FromRow):
    id: int
    rule: str
    severity: str = Field(description="info, warning or critical")
    state: str = Field(description="open, acknowledged, resolved or false_alarm")
    site: str
    device_id: str = Field(description="the device of the first evidence")
    labels: Annotated[list[str], BeforeValidator(_comma_list)] = Field(
        description="the classes that made the alert"
    )
    started_at: Timestamp
    last_evidence_at: Timestamp
    lat: float | None
    lon: float | None
    created_at: Timestamp
    updated_at: Timestamp
    updated_by: str | None = Field(description="the token name that last changed the state")
    note: str | None


class AlertDetailOut(AlertOut):
    evidence: list[AlertEvidenceOut]
    notifications: list[NotificationOut]


class AlertStateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["open", "acknowledged", "resolved", "false_alarm"]
    note: str | None = Field(None, max_length=2000)


class DeadNotificationOut(NotificationOut):
    alert_id: int


class DeviceEditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=128)
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    pinned: bool = Field(True, description="keep these against what the device reports")


class FeedItemOut(BaseModel):
    kind: Literal["event", "alert"]
    id: int = Field(description="row id of the event or alert")
    at: Timestamp
    device_id: str
    device_name: str | None
    label: str = Field(description="event label, or the alert's rule")
    score: float | None = None
    phase: str | None = Field(None, description="events: start, update or end")
    event_id: str | None = None
    duration_s: float | None = None
    lat: float | None = None
    lon: float | None = None
    clip_id: int | None = Field(None, description="the event's clip: /api/v1/clips/{id}/audio")
    second_label: str | None = Field(None, description="the clip's second opinion")
    second_agree: bool | None = None
    severity: str | None = None
    state: str | None = None
    labels: list[str] | None = Field(None, description="alerts: the classes that made it")


class FeedOut(BaseModel):
    items: list[FeedItemOut] = Field(description="newest first")
    after_event: int = Field(description="pass as ?after_event= next time")
    after_alert: int = Field(description="pass as ?after_alert= next time")


class ActivityOut(BaseModel):
    start: Timestamp
    bucket_s: int
    buckets: int
    groups: list[str]
    series: dict[str, list[int]] = Field(description="group -> count per bucket")
    cells: list[tuple[str, str, int, int]] | None = Field(
        None, description="with ?per_device=true: [device, group, bucket, count] rows"
    )


class LevelsOut(BaseModel):
    start: Timestamp
    bucket_s: int
    buckets: int
    leq_dbfs: list[float | None] = Field(description="energy-average level per bucket")
    max_dbfs: list[float | None]


class HeadOut(_FromRow):
    sha256: str = Field(description="sha256 of the file; remote configs name heads by it")
    name: str
    head_id: str = Field(description="name@sha12 of the document, as devices report it")
    classes: Annotated[list[str], BeforeValidator(_comma_list)]
    model_id: str = Field(description="the YAMNet build the head expects")
    size_bytes: int
    uploaded_at: Timestamp
    uploaded_by: str | None


class AlertRuleOut(BaseModel):
    """A rule the alert service runs: from its settings file (change it there) or made
    through the API."""

    name: str
    source: Literal["settings", "api"]
    definition: RuleBody
    updated_at: Timestamp | None = None
    updated_by: str | None = None
