"""Where clip audio lives: content-addressed by sha256, on a filesystem or S3."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from earwitness.shared.errors import EarwitnessError

_KEY_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.flac$")


class ClipStoreError(EarwitnessError):
    """The clip cannot be stored or read: a bad key, a missing object."""


class ClipStoreUnavailable(ClipStoreError):
    """The store itself failed (endpoint down, credentials, disk): try again later, and do
    not hold it against the clip."""


def key_for(sha256: str) -> str:
    """Content address: ``ab/cd/abcd....flac`` (two fan-out levels keep directories small)."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise ClipStoreError(f"invalid sha256 {sha256!r}")
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}.flac"


def check_key(key: str) -> str:
    """Reject anything that is not a content address: no '..', no absolute paths."""
    if not _KEY_RE.fullmatch(key):
        raise ClipStoreError(f"invalid clip key {key!r}")
    return key


class ClipStore(Protocol):
    # Enough to open the same store in another process (ingest's writer processes).
    url: str
    endpoint_url: str | None

    def put(self, data: bytes) -> str: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


class FileClipStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = str(self.root)
        self.endpoint_url: str | None = None

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if self.root not in path.parents:
            raise ClipStoreError(f"clip key {key!r} escapes the store")
        return path

    def put(self, data: bytes) -> str:
        key = key_for(hashlib.sha256(data).hexdigest())
        path = self._path(key)
        if path.exists():
            return key  # same content, same key: idempotent
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".clip.")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ClipStoreError(f"clip {key} not found in {self.root}") from exc
        except OSError as exc:  # an unmounted volume, permissions: not the clip's fault
            raise ClipStoreUnavailable(f"clip {key}: reading {self.root} failed: {exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3ClipStore:
    """S3-compatible store (AWS, MinIO, Ceph); needs the ``s3`` extra (boto3)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        try:
            import boto3
        except ImportError as exc:
            raise ClipStoreError("S3 clip store needs boto3: pip install 'earwitness[s3]'") from exc
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}"
        self.endpoint_url = endpoint_url
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        # Short timeouts and few retries: callers (ingest, the worker) hold the work and
        # retry with their own backoff, so a dead endpoint must fail fast, not hang.
        config = Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 3, "mode": "standard"}
        )
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url, config=config)

        self._errors: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, exc: Exception) -> ClipStoreUnavailable:
        return ClipStoreUnavailable(f"clip {key}: {action} in s3://{self.bucket} failed: {exc}")

    def put(self, data: bytes) -> str:
        key = key_for(hashlib.sha256(data).hexdigest())
        try:
            self._s3.put_object(
                Bucket=self.bucket, Key=self._object(key), Body=data, ContentType="audio/flac"
            )
        except self._errors as exc:
            raise self._fail("upload", key, exc) from exc
        return key

    def get(self, key: str) -> bytes:
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._object(key))
            return bytes(obj["Body"].read())
        except self._errors as exc:
            if _s3_code(exc) in _NOT_FOUND:
                raise ClipStoreError(f"clip {key} not found in s3://{self.bucket}") from exc
            raise self._fail("download", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._object(key))
            return True
        except self._errors as exc:
            # A missing object is an answer; bad credentials or an unreachable endpoint
            # are not, and must not read as "no such clip". (HEAD has no body, so a
            # missing bucket is a 404 too.)
            if _s3_code(exc) in _NOT_FOUND:
                return False
            raise self._fail("lookup", key, exc) from exc

    def delete(self, key: str) -> None:
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._object(key))
        except self._errors as exc:
            raise self._fail("delete", key, exc) from exc


_NOT_FOUND = ("404", "NoSuchKey", "NotFound")


def _s3_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def open_store(url: str, endpoint_url: str | None = None) -> ClipStore:
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        return S3ClipStore(bucket, prefix, endpoint_url)
    return FileClipStore(Path(url))
