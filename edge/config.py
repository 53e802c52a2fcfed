"""Edge agent configuration: a YAML file plus ``EARWITNESS_EDGE_*`` environment variables.

``runtime`` holds what the cloud may change while the agent runs (thresholds, labels of
interest, sampling, publishing policy) through the device's ``config`` topic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from earwitness.shared.config import (
    FileAndEnvSettings,
    MqttSettings,
    StrictModel,
    format_errors,
    load_settings_file,
    load_yaml,
)
from earwitness.shared.errors import ConfigError
from earwitness.shared.messages import Latitude, Longitude
from earwitness.shared.runtime_settings import (  # re-exported: the agent's runtime part
    ClipSettings,
    DetectionSettings,
    PrivacySettings,
    PublishSettings,
    RuntimeSettings,
    Trigger,
)
from earwitness.shared.topics import ID_PATTERN, RESERVED_SITES

__all__ = [
    "ClipSettings",
    "DetectionSettings",
    "EdgeSettings",
    "PrivacySettings",
    "PublishSettings",
    "RemoteConfigSettings",
    "RuntimeSettings",
    "Trigger",
    "load_edge_settings",
]


class DeviceSettings(StrictModel):
    id: str = Field("edge-1", pattern=f"^{ID_PATTERN}$", description="unique device id")
    site: str = Field("default", pattern=f"^{ID_PATTERN}$", description="site the device is at")
    name: str | None = Field(None, max_length=128, description="human-readable name")
    lat: Latitude | None = None
    lon: Longitude | None = None
    directory: Path | None = Field(
        None,
        description="YAML mapping device id -> {site, name, lat, lon} for a whole fleet "
        "(a Kubernetes ConfigMap); this device's entry fills what is not set here",
    )

    @model_validator(mode="after")
    def _both_or_neither(self) -> DeviceSettings:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("set both lat and lon, or neither")
        if self.site in RESERVED_SITES:
            raise ValueError(f"site {self.site!r} is reserved (alert topics use it)")
        return self


class SourceSettings(StrictModel):
    kind: Literal["mic", "file", "stdin", "stream"] = Field(
        "file", description="microphone, file/directory replay, raw PCM on stdin, or ffmpeg URL"
    )
    path: str | None = Field(None, description="file or directory (file), URL (stream)")
    device: str | int | None = Field(None, description="microphone name or index (mic)")
    realtime: bool = Field(True, description="file: replay at real-time pace")
    speed: float = Field(
        1.0, gt=0, le=10_000, description="file with realtime: replay at N x real time"
    )
    loop: bool = Field(False, description="file: start over at the end")
    sample_rate: int = Field(16000, ge=8000, le=192000, description="stdin/mic: input rate")
    channels: int = Field(1, ge=1, le=32, description="stdin/mic: interleaved channels")
    chunk_ms: int = Field(100, ge=10, le=1000, description="capture block length")

    @model_validator(mode="after")
    def _path_for_file(self) -> SourceSettings:
        if self.kind in ("file", "stream") and not self.path:
            raise ValueError(f"source.path is required for kind '{self.kind}'")
        return self


class ModelSettings(StrictModel):
    name: str = Field("yamnet-int8", description="registry name of the patch model")
    dir: Path | None = Field(None, description="model directory (default $EARWITNESS_MODEL_DIR)")
    threads: int = Field(1, ge=1, le=16, description="TFLite interpreter threads")
    blas_threads: int = Field(
        1,
        ge=1,
        le=16,
        description="numpy's BLAS threads (frontend, heads); more fight the inference thread",
    )
    groups_file: Path | None = Field(None, description="label groups YAML (default: shipped)")
    heads: list[Path] = Field(
        default_factory=list,
        max_length=8,
        description="custom heads (`earwitness train`) run on every window's embedding",
    )


class RemoteConfigSettings(StrictModel):
    """Who may change ``runtime`` over the ``config`` topic: only configs signed by one of
    these keys (``earwitness config keygen`` prints one), for this device, with a higher
    version than the one in force. No key: remote config is refused."""

    public_keys: list[str] = Field(
        default_factory=list, description="base64 Ed25519 public keys that may sign configs"
    )
    pin_privacy: bool = Field(
        False, description="refuse remote configs that weaken the local privacy settings"
    )

    @field_validator("public_keys")
    @classmethod
    def _keys_parse(cls, keys: list[str]) -> list[str]:
        from earwitness.shared.signing import load_public_key

        for key in keys:
            try:
                load_public_key(key)
            except ConfigError as exc:
                raise ValueError(str(exc)) from exc
        return keys


class OutboxSettings(StrictModel):
    path: Path = Field(Path("var/outbox.db"), description="SQLite file; keep on persistent storage")
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, description="drop oldest beyond")
    max_age_s: float = Field(7 * 24 * 3600, gt=0, description="drop messages older than this")
    ack_timeout_s: float = Field(30.0, gt=0, description="re-send when not acknowledged by then")
    drain_rate: float = Field(2000.0, ge=0, description="backlog messages/s (0: unlimited)")


class HealthSettings(StrictModel):
    host: str = "127.0.0.1"
    port: int = Field(9101, ge=0, le=65535, description="/healthz and /metrics (0: off)")


class EdgeSettings(FileAndEnvSettings):
    model_config = SettingsConfigDict(
        env_prefix="EARWITNESS_EDGE_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["development", "production"] = Field(
        "development",
        description="production refuses MQTT without TLS, without a credential or with a"
        " sample password",
    )
    device: DeviceSettings = Field(default_factory=DeviceSettings)
    source: SourceSettings = Field(default_factory=lambda: SourceSettings(kind="mic"))
    model: ModelSettings = Field(default_factory=ModelSettings)
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    remote_config: RemoteConfigSettings = Field(default_factory=RemoteConfigSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    health: HealthSettings = Field(default_factory=HealthSettings)
    heartbeat_s: float = Field(30.0, gt=0, le=3600, description="heartbeat interval")
    max_backlog_s: float = Field(
        10.0, ge=1, le=300, description="audio buffered for inference before windows drop"
    )

    @model_validator(mode="after")
    def _production(self) -> EdgeSettings:
        if self.environment == "production":
            problems = self.mqtt.production_problems(require_tls=True)
            if problems:
                raise ValueError("production: " + "; ".join(problems))
        return self


def load_edge_settings(path: Path | None) -> EdgeSettings:
    return apply_directory(load_settings_file(EdgeSettings, path))


def apply_directory(cfg: EdgeSettings) -> EdgeSettings:
    """Fill site, name and location from the fleet directory (keyed by device id)."""
    directory = cfg.device.directory
    if directory is None:
        return cfg
    data, _ = load_yaml(directory)
    entry = data.get(cfg.device.id)
    if entry is None:
        return cfg
    if not isinstance(entry, dict):
        raise ConfigError(f"{directory}: entry '{cfg.device.id}' must be a mapping")
    device = cfg.device.model_dump()
    explicit = cfg.device.model_fields_set
    for key in ("site", "name", "lat", "lon"):
        if key in entry and key not in explicit:
            device[key] = entry[key]
    try:
        return cfg.model_copy(update={"device": DeviceSettings(**device)})
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, f"{directory} entry '{cfg.device.id}'")) from exc
