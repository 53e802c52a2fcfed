"""`earwitness config keygen|sign|push`: the operator's side of signed remote config.

The signing key stays with the operator (a file with mode 0600, or a Kubernetes Secret);
devices hold only its public half in their local configuration. A push publishes the
signed config retained on the device's ``config`` topic, so a device that is offline
gets it when it reconnects.
"""

from __future__ import annotations

import base64
import hashlib
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from earwitness.shared.config import MqttSettings, format_errors, load_yaml
from earwitness.shared.errors import ConfigError
from earwitness.shared.heads import parse_head
from earwitness.shared.mqtt import MqttConnection
from earwitness.shared.runtime_settings import MAX_INLINE_HEAD_CHARS, RuntimeSettings
from earwitness.shared.signing import MAX_CONFIG_BYTES, load_private_key, sign
from earwitness.shared.topics import Downlink, topic

PUBLISH_TIMEOUT_S = 10.0


def runtime_from_file(path: Path) -> dict[str, Any]:
    """A runtime settings YAML (or JSON) file, validated as the device will validate it."""
    data, annotated = load_yaml(path)
    data.pop("version", None)  # the signed envelope carries the version
    try:
        RuntimeSettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_errors(exc, str(path), annotated)) from exc
    return data


def head_ref(blob: bytes, url_base: str | None = None) -> dict[str, Any]:
    """How a config names a head file: inline (base64, signed with the config) or, with
    ``url_base``, by the web app's URL for it (the device checks the sha256 either way)."""
    head = parse_head(blob, "head")
    sha = hashlib.sha256(blob).hexdigest()
    ref: dict[str, Any] = {"sha256": sha, "name": head.name[:64]}
    if url_base:
        ref["url"] = f"{url_base.rstrip('/')}/api/v1/heads/{sha}/artifact"
    else:
        ref["artifact"] = base64.b64encode(blob).decode()
        if len(ref["artifact"]) > MAX_INLINE_HEAD_CHARS:
            raise ConfigError(
                f"head {head.name!r} ({len(blob)} bytes) is too large to ship inline (at most"
                f" {MAX_INLINE_HEAD_CHARS * 3 // 4} bytes): upload it (earwitness heads upload)"
                " and sign with --head-url"
            )
    return ref


def signed_payload(
    key_file: Path,
    site: str,
    device: str,
    runtime_file: Path | None,
    version: int | None,
    heads: list[dict[str, Any]] | None = None,
) -> tuple[bytes, int]:
    """The signed config bytes and their version (unix milliseconds unless given)."""
    version = version if version is not None else int(time.time() * 1000)
    runtime = runtime_from_file(runtime_file) if runtime_file is not None else {}
    if heads is not None:
        runtime["heads"] = heads
        try:
            RuntimeSettings.model_validate(runtime)
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "remote config with heads")) from exc
    payload = sign(load_private_key(key_file), site, device, version, runtime)
    if len(payload) > MAX_CONFIG_BYTES:  # the device would refuse it: say so here
        raise ConfigError(
            f"remote config of {len(payload)} bytes, devices refuse more than"
            f" {MAX_CONFIG_BYTES}: ship heads by URL (--head-url) instead of inline"
        )
    return payload, version


def push(mqtt: MqttSettings, site: str, device: str, payload: bytes) -> None:
    """Publish retained, QoS 1, and wait for the broker's acknowledgement."""
    conn = MqttConnection(mqtt, f"config-push-{int(time.time() * 1000)}")
    conn.start()
    try:
        if not conn.wait_connected(PUBLISH_TIMEOUT_S):
            raise ConfigError(
                f"config push: cannot reach the broker at {mqtt.host}:{mqtt.port} (mqtt.host,"
                " mqtt.port and credentials in the cloud settings)"
            )
        info = conn.publish(topic(site, device, Downlink.CONFIG), payload, qos=1, retain=True)
        info.wait_for_publish(PUBLISH_TIMEOUT_S)
        if not info.is_published():
            raise ConfigError("config push: the broker did not acknowledge the config")
    finally:
        conn.stop()
