"""Signed remote configuration: the cloud signs, the device verifies (Ed25519).

A config message on the wire is ``{"signed": B64(body), "sig": B64(signature), "key":
key_id}``, where ``body`` is the JSON of a ``SignedConfig``: which device it is for, its
version and the runtime settings. The signature covers the exact body bytes, so nothing
is re-serialised before checking. A device accepts a config only when a public key from
its *local* configuration verifies it, it names this device, and its version is strictly
higher than the one in force: a forged, misdirected or replayed config is refused and
reported in the device's status.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from earwitness.shared.errors import ConfigError

MAX_CONFIG_BYTES = 1024 * 1024  # a few hundred bytes, or ~0.55 MB with a 96-unit head inline
SIGNED_VERSION = 1


class SignedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    v: int = Field(SIGNED_VERSION, ge=SIGNED_VERSION, le=SIGNED_VERSION)
    site: str = Field(max_length=64)
    device: str = Field(max_length=64)
    version: int = Field(ge=1, le=2**62, description="strictly increasing; unix ms by default")
    issued_at: str = Field(max_length=40)
    runtime: dict[str, Any] = Field(description="RuntimeSettings as JSON")


def key_id(public: Ed25519PublicKey) -> str:
    """Short, stable name of a public key (first 16 hex of the sha256 of its raw bytes)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """The form a device's config holds: base64 of the 32 raw bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"not an Ed25519 public key (base64 of 32 bytes): {exc}") from exc


def generate(private_path: Path) -> Ed25519PublicKey:
    """Create a signing key, written with mode 0600; returns its public half."""
    if private_path.exists():
        raise ConfigError(f"{private_path} exists: refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key.public_key()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the signing key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 private key")
    return key


def sign(
    key: Ed25519PrivateKey, site: str, device: str, version: int, runtime: dict[str, Any]
) -> bytes:
    """The wire bytes of a signed config for one device."""
    body = (
        SignedConfig(
            site=site,
            device=device,
            version=version,
            issued_at=datetime.now(UTC).isoformat(),
            runtime=runtime,
        )
        .model_dump_json()
        .encode()
    )
    return json.dumps(
        {
            "signed": base64.b64encode(body).decode(),
            "sig": base64.b64encode(key.sign(body)).decode(),
            "key": key_id(key.public_key()),
        }
    ).encode()


def verify(payload: bytes, keys: list[Ed25519PublicKey]) -> SignedConfig:
    """The config inside ``payload`` if one of ``keys`` signed it; ConfigError saying why
    not otherwise (unsigned, malformed, unknown key, bad signature)."""
    if len(payload) > MAX_CONFIG_BYTES:
        raise ConfigError(f"remote config of {len(payload)} bytes refused (max {MAX_CONFIG_BYTES})")
    if not keys:
        raise ConfigError("remote config refused: no signing key configured (runtime_keys)")
    try:
        wire = json.loads(payload)
    except ValueError as exc:
        raise ConfigError(f"remote config is not JSON: {exc}") from exc
    if not isinstance(wire, dict) or not {"signed", "sig"} <= set(wire):
        raise ConfigError("remote config refused: not signed")
    try:
        body = base64.b64decode(str(wire["signed"]), validate=True)
        signature = base64.b64decode(str(wire["sig"]), validate=True)
    except binascii.Error as exc:
        raise ConfigError(f"remote config refused: bad base64 ({exc})") from exc
    for public in keys:
        try:
            public.verify(signature, body)
        except InvalidSignature:
            continue
        try:
            return SignedConfig.model_validate_json(body)
        except ValidationError as exc:
            raise ConfigError(f"remote config refused: bad signed body ({exc})") from exc
    raise ConfigError(
        f"remote config refused: signature does not verify with any configured key"
        f" (signed by {str(wire.get('key'))[:32]!r})"
    )
