"""Registry of known model files, the local model directory, and verified downloads.

Models are never committed or baked into images: each entry names a pinned URL and its
sha256, and a download is only moved into place after its checksum matches.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from earwitness.shared.errors import ModelError

MODEL_DIR_ENV = "EARWITNESS_MODEL_DIR"
MIRROR_ENV = "EARWITNESS_MODEL_MIRROR"
"""Base URL of a local mirror serving files by name (air-gapped sites, tests)."""

DOWNLOAD_TIMEOUT_S = 60
CHUNK = 1 << 16


class InputKind(StrEnum):
    PATCH = "patch"  # [1, 96, 64] log-mel patch from shared.frontend
    WAVEFORM = "waveform"  # [15600] samples; the frontend is inside the graph
    TABLE = "table"  # not a model: data the models need (class map)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    sha256: str
    size: int
    kind: InputKind
    url: str | None
    description: str

    @property
    def short_id(self) -> str:
        """``name@sha12``: what messages and database rows record as the model id."""
        return f"{self.name}@{self.sha256[:12]}"


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="yamnet-int8",
            filename="yamnet_spectra_in.tflite",
            sha256="0a266465c46718f3fcc4137366be82882a8c93bfcc4f0278581a11d11dddcdf9",
            size=4_047_424,
            kind=InputKind.PATCH,
            url=(
                "https://github.com/google-coral/coralmicro/raw/"
                "c9f665b0a8b973d35cb9d383b3e92e9f14b4dd72/models/yamnet_spectra_in.tflite"
            ),
            description="YAMNet full-integer int8 (Coral), log-mel patch input; edge default",
        ),
        ModelSpec(
            name="yamnet-waveform",
            filename="yamnet_waveform.tflite",
            sha256="687f226c147a2caab4706fbbab5e9cecb14b9a368264bf61108078b1fddf68f5",
            size=3_959_752,
            kind=InputKind.WAVEFORM,
            url=None,  # a community conversion: no official URL reproduces this file
            description="YAMNet with TensorFlow's frontend in the graph; second-opinion reference",
        ),
        ModelSpec(
            name="yamnet-class-map",
            filename="yamnet_class_map.csv",
            sha256="b03d48f9ebe23f69ea825193de7e736934086a12410f0af47babe897b78bc0d3",
            size=13_574,
            kind=InputKind.TABLE,
            url=(
                "https://raw.githubusercontent.com/tensorflow/models/master/"
                "research/audioset/yamnet/yamnet_class_map.csv"
            ),
            description="AudioSet index, mid and display name of YAMNet's 521 classes",
        ),
    )
}

DEFAULT_MODEL = "yamnet-int8"
CLASS_MAP = "yamnet-class-map"


def model_dir() -> Path:
    """``$EARWITNESS_MODEL_DIR``, else ``$XDG_CACHE_HOME/earwitness/models``."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "earwitness" / "models"


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model '{name}'; known: {', '.join(REGISTRY)}") from None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(spec: ModelSpec, directory: Path | None = None) -> Path:
    """Return the path of a present, intact model file or raise with what is wrong."""
    directory = directory or model_dir()
    path = directory / spec.filename
    if not directory.is_dir():
        raise ModelError(
            f"model directory {directory} does not exist "
            f"(set {MODEL_DIR_ENV} or run `earwitness models fetch {spec.name}`)"
        )
    if not path.is_file():
        raise ModelError(
            f"{spec.name}: {path} is missing (run `earwitness models fetch {spec.name}`)"
        )
    size = path.stat().st_size
    if size != spec.size:
        raise ModelError(f"{spec.name}: {path} has {size} bytes, expected {spec.size}")
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ModelError(
            f"{spec.name}: {path} has sha256 {actual}, expected {spec.sha256} (corrupt file?)"
        )
    return path


def locate(name: str, directory: Path | None = None) -> Path:
    """Path of a model file, checked by size only (hashing on every start costs time)."""
    spec = get_spec(name)
    directory = directory or model_dir()
    path = directory / spec.filename
    if not path.is_file():
        raise ModelError(
            f"{spec.name}: {path} is missing (run `earwitness models fetch {spec.name}`"
            f" or set {MODEL_DIR_ENV})"
        )
    if path.stat().st_size != spec.size:
        raise ModelError(
            f"{spec.name}: {path} has {path.stat().st_size} bytes, expected {spec.size}"
            f" (run `earwitness models verify {spec.name}`)"
        )
    return path


ProgressFn = Callable[[int, int], None]


def _stderr_progress(name: str) -> ProgressFn:
    def report(done: int, total: int) -> None:
        pct = 100 * done // total if total else 0
        print(f"\r{name}: {done}/{total} bytes ({pct}%)", end="", file=sys.stderr, flush=True)
        if done >= total:
            print(file=sys.stderr)

    return report


def fetch(
    name: str,
    directory: Path | None = None,
    url: str | None = None,
    progress: ProgressFn | None = None,
) -> Path:
    """Download a model atomically: temp file in the target directory, verify, rename."""
    spec = get_spec(name)
    directory = directory or model_dir()
    target = directory / spec.filename
    if target.is_file():
        try:
            return verify(spec, directory)
        except ModelError:
            pass  # present but wrong: download again and replace it
    mirror = os.environ.get(MIRROR_ENV)
    source = url or (f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url)
    if source is None:
        raise ModelError(
            f"{spec.name} has no public download URL; copy {spec.filename} into {directory}"
            f" (or point {MODEL_DIR_ENV} at a directory holding it)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    received = 0
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(source, timeout=DOWNLOAD_TIMEOUT_S) as resp,
        ):
            while block := resp.read(CHUNK):
                received += len(block)
                if received > spec.size:
                    raise ModelError(
                        f"{spec.name}: download from {source} is larger than {spec.size} bytes"
                    )
                digest.update(block)
                out.write(block)
                if progress:
                    progress(received, spec.size)
        if received != spec.size:
            raise ModelError(
                f"{spec.name}: download from {source} truncated:"
                f" got {received} of {spec.size} bytes"
            )
        if digest.hexdigest() != spec.sha256:
            raise ModelError(
                f"{spec.name}: checksum mismatch for {source}: got sha256"
                f" {digest.hexdigest()}, expected {spec.sha256}; file rejected"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise ModelError(f"{spec.name}: download from {source} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target
