"""Where clip audio lives: content-addressed by sha256, on a filesystem or S3."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Protocol

from shared.errors import EarwitnessError

_KEY_RE = re.compile(r"^[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64}\.flac$")


class ClipStoreError(EarwitnessError):
    pass


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
    def put(self, data: bytes) -> str: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...


class FileClipStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

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
        self._s3 = boto3.client("s3", endpoint_url=endpoint_url)

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, data: bytes) -> str:
        key = key_for(hashlib.sha256(data).hexdigest())
        self._s3.put_object(
            Bucket=self.bucket, Key=self._object(key), Body=data, ContentType="audio/flac"
        )
        return key

    def get(self, key: str) -> bytes:
        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._object(key))
        except Exception as exc:  # botocore raises many client error classes
            raise ClipStoreError(f"clip {key} not found in s3://{self.bucket}: {exc}") from exc
        return bytes(obj["Body"].read())

    def exists(self, key: str) -> bool:
        try:
            self._s3.head_object(Bucket=self.bucket, Key=self._object(key))
            return True
        except Exception:
            return False

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=self._object(key))


def open_store(url: str, endpoint_url: str | None = None) -> ClipStore:
    if url.startswith("s3://"):
        bucket, _, prefix = url[5:].partition("/")
        return S3ClipStore(bucket, prefix, endpoint_url)
    return FileClipStore(Path(url))
