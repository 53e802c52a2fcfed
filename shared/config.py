"""Configuration helpers: YAML files validated by pydantic models with errors that point
at the offending line, and MQTT connection settings shared by every service."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from earwitness.shared.errors import ConfigError

log = logging.getLogger(__name__)

# Read by the code directly, not settings: never reported as unknown.
PROCESS_VARIABLES = frozenset(
    {"EARWITNESS_MODEL_DIR", "EARWITNESS_MODEL_MIRROR", "EARWITNESS_SHARED"}
)
# Every settings class's prefix: the cloud's EARWITNESS_ also matches the edge's.
SETTINGS_PREFIXES = ("EARWITNESS_", "EARWITNESS_EDGE_")

M = TypeVar("M", bound=BaseModel)
S = TypeVar("S", bound="FileAndEnvSettings")


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config file must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# Passwords from docs, examples and habits: refused in production wherever a secret is set.
SAMPLE_PASSWORDS = frozenset(
    {
        "",
        "changeme",
        "change-me",
        "password",
        "secret",
        "admin",
        "root",
        "mosquitto",
        "earwitness",
        "test",
        "example",
        "123456",
        "pw-dev1",
        "pw-ingest",
    }
)


class MqttSettings(StrictModel):
    host: str = Field("127.0.0.1", description="broker host name or address")
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = Field(None, description="MQTT user (the device id on devices)")
    password: SecretStr | None = Field(None, description="MQTT password; prefer password_file")
    password_file: Path | None = Field(
        None, description="file holding the password (a mounted Kubernetes Secret)"
    )
    tls: bool = Field(False, description="connect with TLS")
    ca_file: Path | None = Field(None, description="CA bundle to verify the broker with")
    cert_file: Path | None = Field(None, description="client certificate for mutual TLS")
    key_file: Path | None = Field(None, description="client key for mutual TLS")
    keepalive_s: int = Field(30, ge=5, le=3600)
    reconnect_min_s: float = Field(0.5, gt=0, description="first reconnect delay (jittered)")
    reconnect_max_s: float = Field(30.0, gt=0, description="longest reconnect delay")

    @model_validator(mode="after")
    def _check(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either password or password_file, not both")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must not exceed reconnect_max_s")
        return self

    def production_problems(self, require_tls: bool) -> list[str]:
        """What a production deployment must not run with: no credential, a sample
        password, or (for devices, whose traffic crosses networks) no TLS."""
        problems = []
        if self.username is None or (self.password is None and self.password_file is None):
            problems.append("mqtt.username and mqtt.password(_file) are required")
        elif self.password is not None and (
            self.password.get_secret_value().strip().lower() in SAMPLE_PASSWORDS
        ):
            problems.append("mqtt.password is a sample password: onboarding prints a real one")
        if require_tls and not self.tls:
            problems.append("mqtt.tls must be true (the broker's device listener is 8883)")
        return problems

    def resolved_password(self) -> str | None:
        if self.password_file is not None:
            try:
                return self.password_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"mqtt.password_file: cannot read {self.password_file}: {exc}"
                ) from exc
        return self.password.get_secret_value() if self.password else None


class _LineLoader(yaml.SafeLoader):
    """Remembers the line of every mapping key so validation errors can cite it."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key '{key}'")
        mapping[key] = loader.construct_object(value_node, deep=True)
        lines[str(key)] = key_node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _strip_lines(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _strip_lines(v) for k, v in data.items() if k != "__lines__"}
    if isinstance(data, list):
        return [_strip_lines(v) for v in data]
    return data


def _line_of(data: Any, loc: tuple[int | str, ...]) -> int | None:
    line = None
    node = data
    for part in loc:
        if isinstance(node, dict):
            line = node.get("__lines__", {}).get(str(part), line)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            break
    return line


def format_errors(exc: ValidationError, source: str, raw: Any = None) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "<root>"
        line = _line_of(raw, loc) if raw is not None else None
        at = f"line {line}: " if line else ""
        msg = "unknown key (check the spelling)" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"  {at}{where}: {msg}")
    return "\n".join(lines)


def load_yaml(path: Path) -> tuple[dict[str, Any], Any]:
    """Parse a YAML file; returns (plain data, data annotated with key line numbers)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration ({exc})") from exc
    try:
        annotated = yaml.load(text, Loader=_LineLoader) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(annotated, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return _strip_lines(annotated), annotated


def validate(model: type[M], data: dict[str, Any], source: str, annotated: Any = None) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, source, annotated)) from exc


class FileAndEnvSettings(BaseSettings):
    """Settings read from a YAML file and the environment; the environment wins, so a
    Kubernetes env var overrides the mounted config file (which arrives as init kwargs)."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings, file_secret_settings


def unknown_environment(
    cls: type[BaseSettings], environ: dict[str, str] | None = None
) -> list[str]:
    """Variables with ``cls``'s prefix that name no setting. pydantic-settings ignores
    them, so a typo such as ``EARWITNESS_MQTT__HOTS`` would otherwise change nothing
    without a word."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    delimiter = str(cls.model_config.get("env_nested_delimiter") or "__")
    others = [p for p in SETTINGS_PREFIXES if p != prefix and p.startswith(prefix)]
    unknown = []
    for key in sorted(os.environ if environ is None else environ):
        upper = key.upper()
        if not upper.startswith(prefix) or upper in PROCESS_VARIABLES:
            continue
        if any(upper.startswith(p) for p in others):
            continue
        model: Any = cls
        for part in upper[len(prefix) :].lower().split(delimiter):
            if model is None:
                break  # a dict or list value: its keys are not checked here
            field = model.model_fields.get(part)
            if field is None:
                unknown.append(key)
                break
            ann = field.annotation
            model = ann if inspect.isclass(ann) and issubclass(ann, BaseModel) else None
    return unknown


def environment_names(cls: type[BaseSettings], depth: int = 3) -> list[str]:
    """The variable of every setting, nested ones joined by the delimiter."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    delimiter = str(cls.model_config.get("env_nested_delimiter") or "__")
    names: list[str] = []

    def walk(model: type[BaseModel], path: str, level: int) -> None:
        for name, field in model.model_fields.items():
            full = f"{path}{delimiter}{name}" if path else name
            names.append((prefix + full).upper())
            ann = field.annotation
            if level < depth and inspect.isclass(ann) and issubclass(ann, BaseModel):
                walk(ann, full, level + 1)

    walk(cls, "", 1)
    return names


def _warn_unknown_environment(cls: type[BaseSettings]) -> None:
    unknown = unknown_environment(cls)
    if not unknown:
        return
    known = environment_names(cls)
    for key in unknown:
        close = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.8)
        hint = f"; did you mean {close[0]}?" if close else " (check its spelling)"
        log.warning("%s is not a setting and is ignored%s", key, hint)


def load_settings_file(cls: type[S], path: Path | None) -> S:
    """``cls`` from an optional YAML file plus the environment, with errors that name the
    file and line, or the environment variable prefix."""
    _warn_unknown_environment(cls)
    if path is None:
        try:
            return cls()
        except ValidationError as exc:
            prefix = cls.model_config.get("env_prefix", "")
            raise ConfigError(format_errors(exc, f"environment ({prefix}*)")) from exc
    data, annotated = load_yaml(path)
    try:
        return cls(**data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path), annotated)) from exc
