"""What the cloud may change on a device while it runs: the payload of a (signed) remote
config, and the ``runtime`` part of the agent's own configuration. Shared so the cloud
validates a config before it signs and pushes it (`earwitness config push`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from earwitness.shared.config import StrictModel
from earwitness.shared.messages import MAX_CLIP_AUDIO_BYTES


class Trigger(StrictModel):
    """A label (display name or AudioSet mid), a label group, or a custom head's class."""

    label: str | None = None
    group: str | None = None
    custom: str | None = Field(None, description="a class of a custom head (model.heads)")
    threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="score that starts an event (default: 0.5, or the head's calibrated one)",
    )
    hysteresis: float = Field(0.1, ge=0, lt=1, description="event ends below threshold - this")

    @model_validator(mode="after")
    def _one_target(self) -> Trigger:
        if sum(x is not None for x in (self.label, self.group, self.custom)) != 1:
            raise ValueError("a trigger names exactly one of label, group or custom")
        return self

    @property
    def target(self) -> str:
        return self.group or self.label or self.custom or ""


class DetectionSettings(StrictModel):
    triggers: list[Trigger] = Field(
        default_factory=lambda: [
            Trigger(group="distress", threshold=0.4),
            Trigger(group="alarm", threshold=0.4),
        ]
    )
    min_windows: int = Field(2, ge=1, le=100, description="positive windows before an event")
    cooldown_s: float = Field(5.0, ge=0, description="quiet time after an event ends")
    min_dbfs: float = Field(-60.0, le=0, description="windows quieter than this never trigger")
    update_every_s: float = Field(5.0, gt=0, description="event update messages while active")


class PublishSettings(StrictModel):
    inference: Literal["every", "every_n", "interest", "none"] = Field(
        "every", description="which windows produce an inference message"
    )
    every_n: int = Field(10, ge=1, description="with 'every_n': one window in n")
    top_k: int = Field(5, ge=1, le=10)


class ClipSettings(StrictModel):
    enabled: bool = True
    every_n: int = Field(0, ge=0, description="sample one clip every n windows (0: never)")
    events: bool = Field(True, description="a clip for every event start")
    low_confidence: tuple[float, float] | None = Field(
        (0.3, 0.5), description="clip windows whose top score falls in this band"
    )
    low_confidence_max_per_hour: int = Field(30, ge=0)
    pre_roll_s: float = Field(1.0, ge=0, le=10)
    post_roll_s: float = Field(1.0, ge=0, le=10)
    max_bytes: int = Field(256 * 1024, ge=4096, le=MAX_CLIP_AUDIO_BYTES)


class PrivacySettings(StrictModel):
    enabled: bool = Field(True, description="withhold clips that contain speech")
    speech_threshold: float = Field(
        0.3, gt=0, le=1, description="speech group score above which a clip is withheld"
    )


MAX_INLINE_HEAD_CHARS = 700_000  # base64 of a ~0.5 MB head: a config stays below 1 MB


class HeadRef(StrictModel):
    """A custom head shipped by remote config: inline (base64 of the head file, signed with
    the config) or by URL; either way the device checks the file's sha256 before loading."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the head file")
    name: str | None = Field(None, max_length=64)
    artifact: str | None = Field(
        None, max_length=MAX_INLINE_HEAD_CHARS, description="the head file, base64"
    )
    url: str | None = Field(
        None, pattern=r"^https?://", max_length=2000, description="where to download it"
    )

    @model_validator(mode="after")
    def _one_source(self) -> HeadRef:
        if (self.artifact is None) == (self.url is None):
            raise ValueError("a head ref carries exactly one of artifact (inline) or url")
        return self


class RuntimeSettings(StrictModel):
    """The part the cloud may replace at run time (``config`` topic)."""

    version: int = Field(0, ge=0, description="increases with every remote change")
    heads: list[HeadRef] | None = Field(
        None,
        max_length=8,
        description="custom heads to run instead of the local model.heads (None: keep them;"
        " []: run none)",
    )
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    clips: ClipSettings = Field(default_factory=ClipSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
