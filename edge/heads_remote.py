"""Custom heads that arrive in a signed remote config (`RuntimeSettings.heads`).

Each head is inline (base64) or downloaded from a URL, and only used if the file's sha256
is the one the signed config names, it parses, and it fits the model the device runs.
Files are kept by sha256 beside the outbox, so a restart without network still has them
and a head already downloaded is not fetched again. Any failure refuses the whole config:
the agent keeps running what it had (edge/agent.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from earwitness.shared import __version__
from earwitness.shared.errors import ConfigError
from earwitness.shared.heads import MAX_HEAD_BYTES, Head, HeadError, checked_heads, parse_head
from earwitness.shared.runtime_settings import HeadRef

DOWNLOAD_TIMEOUT_S = 30.0


def _download(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": f"earwitness/{__version__}"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            blob: bytes = response.read(MAX_HEAD_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise ConfigError(f"head {url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"head {url}: {getattr(exc, 'reason', exc)}") from exc
    if len(blob) > MAX_HEAD_BYTES:
        raise ConfigError(f"head {url}: larger than {MAX_HEAD_BYTES} bytes")
    return blob


class HeadStore:
    """Head files by sha256 in ``directory`` (created on first use)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, sha256: str) -> Path:
        return self.directory / f"{sha256}.head.json"

    def bytes_of(self, ref: HeadRef) -> bytes:
        cached = self._path(ref.sha256)
        if cached.is_file():
            blob = cached.read_bytes()
            if hashlib.sha256(blob).hexdigest() == ref.sha256:
                return blob
        if ref.artifact is not None:
            try:
                blob = base64.b64decode(ref.artifact, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(f"head {ref.name or ref.sha256[:12]}: bad base64") from exc
        else:
            assert ref.url is not None
            blob = _download(ref.url)
        actual = hashlib.sha256(blob).hexdigest()
        if actual != ref.sha256:
            raise ConfigError(
                f"head {ref.name or ref.sha256[:12]}: sha256 {actual[:12]}... is not the"
                f" {ref.sha256[:12]}... the signed config names (damaged or swapped)"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, cached)
        return blob

    def resolve(self, refs: list[HeadRef], model_id: str) -> list[Head]:
        """The heads ``refs`` name, checked to run together on ``model_id``."""
        named = []
        for ref in refs:
            label = f"head {ref.name or ref.sha256[:12]}"
            try:
                named.append((label, parse_head(self.bytes_of(ref), label)))
            except HeadError as exc:
                raise ConfigError(str(exc)) from exc
        try:
            return checked_heads(named, model_id)
        except HeadError as exc:
            raise ConfigError(str(exc)) from exc
