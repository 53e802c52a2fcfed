"""Cloud service settings: environment variables (``EARWITNESS_*``, nested with ``__``)
and an optional YAML file. Outside development no default secret is accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from earwitness.cloud.alerts.rules import AlertSettings
from earwitness.shared.config import (
    SAMPLE_PASSWORDS,
    FileAndEnvSettings,
    MqttSettings,
    StrictModel,
    load_settings_file,
)
from earwitness.shared.errors import ConfigError
from earwitness.shared.messages import MAX_CLIP_AUDIO_BYTES

DEFAULT_SQLITE_URL = "sqlite:///var/earwitness.db"


class IngestSettings(StrictModel):
    group: str = Field(
        "ingest", pattern=r"^[A-Za-z0-9_-]+$", description="shared-subscription group"
    )
    client_id: str | None = Field(
        None, description="MQTT client id, stable across restarts (default: ingest-<hostname>)"
    )
    sites: list[str] | None = Field(
        None, description="only these sites (default: all); one ingest per tenant or for tests"
    )
    session_expiry_s: int = Field(
        7 * 24 * 3600,
        ge=0,
        description="how long the broker keeps our session and queues messages while we are down",
    )
    batch_size: int = Field(2000, ge=1, le=10_000, description="most rows per database transaction")
    batch_ms: int = Field(100, ge=1, le=10_000, description="longest wait before a partial batch")
    receive_maximum: int = Field(
        20_000,
        ge=20,
        le=65_535,
        description="unacknowledged messages the broker may send us (MQTT v5 Receive Maximum)",
    )
    max_retries: int = Field(
        8, ge=0, description="retries of a batch on deadlock / lost connection"
    )
    writer_processes: int = Field(
        2,
        ge=0,
        le=8,
        description="child processes that validate and write batches while this one receives"
        " and acknowledges; two overlap one's database round trip with the other's work"
        " (0: everything in one process)",
    )
    health_host: str = "127.0.0.1"
    health_port: int = Field(9102, ge=0, le=65535, description="/healthz and /metrics (0: off)")
    dead_letter_payload_bytes: int = Field(
        4096, ge=0, description="payload bytes kept per dead letter"
    )


class ClipStoreSettings(StrictModel):
    url: str = Field(
        "var/clips",
        description="a directory (filesystem store) or s3://bucket/prefix (S3-compatible)",
    )
    s3_endpoint: str | None = Field(None, description="endpoint URL for MinIO / other S3 services")
    max_bytes: int = Field(
        MAX_CLIP_AUDIO_BYTES,
        ge=1024,
        le=MAX_CLIP_AUDIO_BYTES,
        description="largest clip accepted (the message schema's limit at most)",
    )


class WebSettings(StrictModel):
    @field_validator("pmtiles_path")
    @classmethod
    def _pmtiles_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no PMTiles archive at {value}")
        return value

    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8000, ge=1, le=65535)
    auth: bool = Field(True, description="require API tokens (only the demo turns this off)")
    tile_url: str = Field(
        "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        max_length=500,
        description="online raster tiles over the offline basemap when the browser can reach"
        " them (default OpenStreetMap); empty: never ask the internet",
    )
    tile_attribution: str = Field(
        "© OpenStreetMap contributors", max_length=300, description="shown on the map"
    )
    pmtiles_path: Path | None = Field(
        None,
        description="a local PMTiles archive (raster or vector, e.g. a protomaps extract) served"
        " at /tiles/basemap.pmtiles for air-gapped sites",
    )
    pmtiles_attribution: str = Field("© OpenStreetMap contributors", max_length=300)
    cors_origins: list[str] = Field(default_factory=list, description="CORS is off unless set")
    max_request_bytes: int = Field(64 * 1024, ge=1024, description="larger requests get 413")
    max_page: int = Field(1000, ge=1, le=10_000, description="largest page of the API")
    max_range_days: float = Field(31, gt=0, description="longest time range of one query")
    map_detections_limit: int = Field(
        20_000,
        ge=0,
        le=1_000_000,
        description="newest detections the map aggregates per load (bounds each request's work)",
    )
    detection_min_score: float = Field(
        0.5, ge=0, le=1, description="group score from which a window counts as a detection"
    )


def _database_password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        password = make_url(url).password
    except Exception:  # an unparseable URL fails later, with its own message
        return None
    return None if password is None else str(password).strip().lower()


class CloudSettings(FileAndEnvSettings):
    model_config = SettingsConfigDict(
        env_prefix="EARWITNESS_", env_nested_delimiter="__", extra="forbid"
    )

    environment: Literal["development", "production"] = Field(
        "development", description="production refuses anonymous MQTT and missing secrets"
    )
    database_url: str = Field(DEFAULT_SQLITE_URL, description="SQLAlchemy URL")
    database_password_file: Path | None = Field(
        None, description="file with the database password (inserted into database_url)"
    )
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    clips: ClipStoreSettings = Field(default_factory=ClipStoreSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)

    @model_validator(mode="after")
    def _production_has_secrets(self) -> CloudSettings:
        if self.environment == "production":
            if self.mqtt.password is not None:  # set but weak: refuse wherever it is used
                problems = self.mqtt.production_problems(require_tls=False)
                if any("sample" in problem for problem in problems):
                    raise ValueError("production: " + "; ".join(problems))
            if _database_password(self.database_url) in SAMPLE_PASSWORDS:
                raise ValueError("production: the database_url password is a sample password")
            if not self.web.auth:
                raise ValueError("production requires web.auth (API tokens)")
            if self.database_url.startswith("sqlite"):
                raise ValueError("production needs a MySQL/MariaDB database_url, not SQLite")
        return self

    def require_mqtt(self) -> None:
        """Services that talk MQTT (ingest, config push) need their own credential in
        production; web, second opinion and migrations do not use MQTT and get none."""
        if self.environment != "production":
            return
        problems = self.mqtt.production_problems(require_tls=False)
        if problems:
            raise ConfigError("production: " + "; ".join(problems))

    def resolved_database_url(self) -> str:
        if self.database_password_file is None:
            return self.database_url
        from sqlalchemy.engine import make_url

        password = self.database_password_file.read_text(encoding="utf-8").strip()
        return (
            make_url(self.database_url).set(password=password).render_as_string(hide_password=False)
        )


def load_settings(path: Path | None = None) -> CloudSettings:
    """Settings from an optional YAML file; environment variables override the file."""
    return load_settings_file(CloudSettings, path)
