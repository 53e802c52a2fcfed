"""The S3 clip store against an S3-compatible HTTP server, through boto3 as in production.

No AWS or MinIO is reachable here; moto's server speaks the S3 REST protocol over a real
socket (signing, bucket and object calls), so the store, ingest's writer processes and
the web download are exercised over HTTP exactly as against MinIO.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from earwitness.cloud.clipstore import ClipStoreError, S3ClipStore, key_for, open_store
from earwitness.cloud.db.models import Clip, DeadLetter
from earwitness.cloud.web.app import create_app
from earwitness.cloud.web.auth import create_token
from earwitness.shared.topics import Kind
from tests.factories import Device as Dev
from tests.factories import wire
from tests.ingest_helpers import Publisher, ingest_settings, running_ingest_with, wait_for
from tests.services import free_port, unique
from tests.web_helpers import web_settings


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    # Credentials the usual AWS way; the spawned writer processes inherit them.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "earwitness-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "earwitness-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_endpoint: str) -> str:
    import boto3

    name = unique("ew-clips-")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def test_round_trip_and_errors(s3_endpoint: str, bucket: str) -> None:
    store = open_store(f"s3://{bucket}/site-a/", s3_endpoint)
    assert isinstance(store, S3ClipStore) and store.url == f"s3://{bucket}/site-a"
    data = b"fLaC" + bytes(range(256)) * 8
    key = store.put(data)
    assert key == key_for(hashlib.sha256(data).hexdigest())
    assert store.put(data) == key  # content-addressed: same bytes, same key
    assert store.exists(key) and store.get(key) == data

    import boto3

    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == [f"site-a/{key}"]

    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(ClipStoreError, match=f"not found in s3://{bucket}"):
        store.get(key)
    with pytest.raises(ClipStoreError, match="invalid clip key"):
        store.get("../../etc/passwd")


def test_missing_bucket_and_dead_endpoint_are_clear_errors(s3_endpoint: str) -> None:
    store = open_store("s3://no-such-bucket", s3_endpoint)
    with pytest.raises(ClipStoreError, match="no-such-bucket"):
        store.put(b"fLaC")
    unreachable = open_store("s3://clips", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ClipStoreError, match="lookup in s3://clips failed"):
        unreachable.exists(key_for("0" * 64))  # an error, not "no such clip"


@pytest.mark.mqtt
@pytest.mark.parametrize("writers", [2, 0], ids=["writer-processes", "one-process"])
def test_clip_waits_for_s3_then_lands_there_and_downloads_from_the_api(
    db_url: str, engine, tmp_path: Path, s3_endpoint: str, writers: int
) -> None:  # type: ignore[no-untyped-def]
    import boto3

    site = unique("s")
    dev = Dev(site, "dev1")
    clip_msg = dev.clip(0)
    bucket = unique("ew-later-")  # does not exist yet: the store is "down"
    store = open_store(f"s3://{bucket}/clips", s3_endpoint)
    pub = Publisher()
    pub.watch_acks(site)
    ack_topic = f"earwitness/v1/{site}/dev1/ack"
    settings = ingest_settings(db_url, site, writer_processes=writers)
    with running_ingest_with(settings, store) as svc:
        pub.publish(dev.topic(Kind.CLIP), wire(clip_msg))
        wait_for(lambda: not svc.health()[0], 10, what="ingest reporting the unstored batch")
        assert svc.metrics.total("batches_total") == 0
        assert _clip_rows(engine) == 0 and _dead_letters(engine) == 0
        assert pub.ack_seq(ack_topic) is None  # not acknowledged while not stored
        boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
        wait_for(lambda: pub.ack_seq(ack_topic) == 0, 30, what="clip stored after S3 came back")
        assert _clip_rows(engine) == 1 and _dead_letters(engine) == 0
    pub.close()
    with engine.connect() as conn:
        clip = conn.execute(select(Clip)).one()
    assert clip.storage_key == key_for(clip_msg.sha256)
    assert store.get(clip.storage_key) == clip_msg.audio()

    app_settings = web_settings(db_url, tmp_path / "unused")
    from fastapi.testclient import TestClient

    with TestClient(create_app(app_settings, engine, store)) as c:
        c.headers["Authorization"] = f"Bearer {create_token(engine, 'reader', 'read')}"
        r = c.get(f"/api/v1/clips/{clip.id}/audio")
    assert r.status_code == 200 and r.content == clip_msg.audio()
    dead = open_store(f"s3://{bucket}/clips", f"http://127.0.0.1:{free_port()}")
    with TestClient(create_app(app_settings, engine, dead)) as c:
        c.headers["Authorization"] = f"Bearer {create_token(engine, 'reader2', 'read')}"
        assert c.get(f"/api/v1/clips/{clip.id}/audio").status_code == 503  # not "no such clip"


def _clip_rows(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return len(conn.execute(select(Clip.id)).all())


def _dead_letters(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return len(conn.execute(select(DeadLetter.id)).all())


def test_worker_gives_clips_back_while_the_store_is_down(
    engine, tmp_path: Path, s3_endpoint: str, bucket: str, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    """An S3 outage is not the clips' fault: no attempt is counted, nothing is marked
    failed, and the clips are scored once the store answers again."""
    from earwitness.cloud.clipstore import FileClipStore
    from earwitness.cloud.secondopinion.backends import YamnetReference
    from earwitness.cloud.secondopinion.worker import Worker
    from tests.conftest import MODELS
    from tests.test_second_opinion import store_clips

    t = np.arange(16000) / 16000
    waves = [(0.3 * np.sin(2 * np.pi * f * t)).astype(np.float32) for f in (440, 880)]
    store_clips(engine, tmp_path / "clips", patch_model, class_map, waves)
    live = open_store(f"s3://{bucket}", s3_endpoint)
    local = FileClipStore(tmp_path / "clips")
    with engine.connect() as conn:
        for key in conn.execute(select(Clip.storage_key)).scalars():
            assert live.put(local.get(key)) == key

    reference = YamnetReference(MODELS)
    dead = open_store(f"s3://{bucket}", f"http://127.0.0.1:{free_port()}")
    down = Worker(engine, dead, [reference], name="sees-s3-down")
    for _ in range(4):  # more than MAX_ATTEMPTS
        assert down.run_once(limit=2) == 0
    assert down.store_errors == 4 and down.failed == 0
    with engine.connect() as conn:
        states = conn.execute(select(Clip.status, Clip.attempts, Clip.lease_until)).all()
    assert states == [("pending", 0, None)] * 2

    up = Worker(engine, live, [reference], name="sees-s3-up")
    assert up.run_once(limit=2) == 2 and up.processed == 2
    with engine.connect() as conn:
        assert conn.execute(select(Clip.status, Clip.attempts)).all() == [("done", 1)] * 2
