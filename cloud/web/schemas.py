"""Response models of /api/v1: what each field is, in /openapi.json, and one place that
turns a database row into what the API sends."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PlainSerializer, computed_field

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
    lat: float
    lon: float
    group: str
    score: float
    label: str


class MapUpdatesOut(BaseModel):
    items: list[MapDetectionOut]
    last_id: int = Field(description="pass as ?after_id= next time")
