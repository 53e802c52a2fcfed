"""The API behind the map's feed, charts, timeline, spectrograms and device editing, and
the filter bar's behaviour, against real databases (SQLite and MariaDB)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.web.auth import create_token
from earwitness.shared.topics import Kind
from tests.factories import wire
from tests.web_helpers import client, seed, seed_alert, web_settings


@pytest.fixture
def api(db_url: str, engine: Any, tmp_path: Path) -> Any:
    devices = seed(engine, tmp_path / "clips")
    alert_id = seed_alert(engine, tmp_path / "clips", devices)
    c = client(web_settings(db_url, tmp_path / "clips"), engine)
    c.headers["Authorization"] = f"Bearer {create_token(engine, 'reader', 'read')}"
    admin = {"Authorization": f"Bearer {create_token(engine, 'ops', 'admin')}"}
    return c, admin, engine, devices, alert_id, tmp_path


def _store(engine: Any, tmp_path: Path, topic: str, msg: Any) -> None:
    raw = RawMessage(topic, wire(msg), datetime.now(UTC))
    BatchStore(engine).store(prepare([raw], FileClipStore(tmp_path / "clips"), Limits(2**19, 4096)))


def test_feed_lists_events_and_alerts_then_only_what_is_new(api: Any) -> None:
    c, _admin, engine, devices, alert_id, tmp_path = api
    out = c.get("/api/v1/feed").json()
    kinds = sorted((i["kind"], i["device_id"]) for i in out["items"])
    assert kinds == [
        ("alert", "vienna"),
        ("event", "berlin"),
        ("event", "paris"),
        ("event", "vienna"),
    ]
    vienna = next(i for i in out["items"] if i["kind"] == "event" and i["device_id"] == "vienna")
    assert vienna["clip_id"] is not None  # the event's clip, playable from the feed
    assert c.get(f"/api/v1/clips/{vienna['clip_id']}/audio").status_code == 200
    alert = next(i for i in out["items"] if i["kind"] == "alert")
    assert (alert["id"], alert["state"], alert["labels"]) == (
        alert_id,
        "open",
        ["glass_break", "scream"],
    )
    cursor = f"after_event={out['after_event']}&after_alert={out['after_alert']}"
    assert c.get(f"/api/v1/feed?{cursor}").json()["items"] == []
    dev = devices["berlin"]
    ev = dev.event(700).model_copy(
        update={"event_id": "ev-new-01", "started_at": datetime.now(UTC)}
    )
    _store(engine, tmp_path, dev.topic(Kind.EVENT), ev)
    new = c.get(f"/api/v1/feed?{cursor}").json()["items"]
    assert [(i["kind"], i["event_id"]) for i in new] == [("event", "ev-new-01")]
    assert c.get("/api/v1/feed?device=paris").json()["items"][0]["device_id"] == "paris"


def test_activity_buckets_sum_to_the_detections_and_split_by_device(api: Any) -> None:
    c, *_ = api
    a = c.get("/api/v1/stats/activity?bucket=hour").json()
    assert a["bucket_s"] == 3600 and a["buckets"] == 24
    assert sorted(a["groups"]) == ["alarm", "animal", "speech"]
    assert {g: sum(v) for g, v in a["series"].items()} == {"alarm": 60, "animal": 60, "speech": 60}
    assert a["cells"] is None
    per = c.get("/api/v1/stats/activity?per_device=true&group=alarm").json()
    assert {(d, g) for d, g, _b, _n in per["cells"]} == {("vienna", "alarm")}
    assert sum(n for *_x, n in per["cells"]) == 60
    # The chart honours every filter the map does, the custom class too (no window of
    # this data set has one, so nothing is counted).
    custom = c.get("/api/v1/stats/activity?bucket=hour&custom=scream").json()
    assert sum(sum(v) for v in custom["series"].values()) == 0
    auto = c.get("/api/v1/stats/activity").json()
    assert 24 <= auto["buckets"] <= 96  # about a bar per 15-60 minutes over a day
    assert c.get("/api/v1/stats/activity?bucket=week").status_code == 422


def test_levels_are_energy_averages_per_bucket(api: Any) -> None:
    c, *_ = api
    assert c.get("/api/v1/stats/levels").status_code == 422  # which device?
    lv = c.get("/api/v1/stats/levels?device=vienna&bucket=hour").json()
    levels = [v for v in lv["leq_dbfs"] if v is not None]
    assert levels and all(abs(v + 23.5) < 0.01 for v in levels)  # every window is -23.5 dBFS
    assert [v for v in lv["max_dbfs"] if v is not None] == [-23.5] * len(levels)


def test_spectrogram_is_a_png_of_the_clip_and_cached(api: Any) -> None:
    c, *_ = api
    clip = c.get("/api/v1/clips?device=vienna").json()[0]
    r = c.get(f"/api/v1/clips/{clip['id']}/spectrogram.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    png = r.content
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert height == 128  # 64 mel bands, two pixels each
    assert 195 <= width <= 201  # 2 s of 10 ms frames
    assert r.headers["etag"] == f'"{clip["sha256"]}"'
    assert c.get(f"/api/v1/clips/{clip['id']}/spectrogram.png").content == png
    assert c.get("/api/v1/clips/999999/spectrogram.png").status_code == 404


def test_a_440_hz_tone_lights_the_matching_mel_band() -> None:
    """The image is the frontend's log-mel: a pure tone is one bright row."""
    import zlib

    import numpy as np

    from earwitness.cloud.web.spectrogram import render
    from earwitness.shared import audio
    from earwitness.shared.frontend import hertz_to_mel

    t = np.arange(16000) / 16000
    png = render(audio.encode_flac((0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)))
    width, height = struct.unpack(">II", png[16:24])
    idat = png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8]
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, 1 + width * 3)
    brightness = rows[:, 1:].reshape(height, width, 3).astype(int).sum(axis=2).mean(axis=1)
    band = (height - 1 - int(np.argmax(brightness))) // 2  # row 0 is the top (7.5 kHz)
    edges = np.linspace(hertz_to_mel(125.0), hertz_to_mel(7500.0), 66)
    expected = int(np.argmin(np.abs(edges[1:-1] - hertz_to_mel(440.0))))  # band centres
    assert abs(band - expected) <= 1


def test_operators_name_and_place_devices_and_the_device_does_not_undo_it(api: Any) -> None:
    c, admin, engine, devices, _alert, tmp_path = api
    body = {"name": "Main gate", "lat": 48.0, "lon": 16.0}
    assert c.patch("/api/v1/devices/vienna", json=body).status_code == 403  # read token
    r = c.patch("/api/v1/devices/vienna", json=body, headers=admin)
    assert r.status_code == 200 and r.json()["name"] == "Main gate" and r.json()["pinned"]
    assert c.patch("/api/v1/devices/vienna", json={"lat": 1.0}, headers=admin).status_code == 422
    assert c.patch("/api/v1/devices/nope", json=body, headers=admin).status_code == 404
    dev = devices["vienna"]
    status = dev.status("online", datetime.now(UTC)).model_copy(update={"name": "renamed"})
    _store(engine, tmp_path, dev.topic(Kind.STATUS), status)
    _store(engine, tmp_path, dev.topic(Kind.INFERENCE), dev.inference(800))  # its own location
    got = c.get("/api/v1/devices/vienna").json()
    assert (got["name"], got["lat"], got["lon"]) == ("Main gate", 48.0, 16.0)


def test_devices_report_their_names_and_heads_in_status(api: Any) -> None:
    c, _admin, engine, devices, _alert, tmp_path = api
    dev = devices["berlin"]
    status = dev.status("online", datetime.now(UTC)).model_copy(
        update={"name": "Berlin, Alexanderplatz", "heads": ["distress@0123456789ab"]}
    )
    _store(engine, tmp_path, dev.topic(Kind.STATUS), status)
    got = c.get("/api/v1/devices/berlin").json()
    assert (got["name"], got["heads"]) == ("Berlin, Alexanderplatz", "distress@0123456789ab")
    assert "Berlin, Alexanderplatz" in c.get("/devices/berlin/popup").text


def test_label_filter_ignores_case(api: Any) -> None:
    c, *_ = api
    upper = c.get("/api/v1/inferences?label=Siren&limit=1000").json()["items"]
    lower = c.get("/api/v1/inferences?label=siren&limit=1000").json()["items"]
    assert len(upper) == len(lower) == 60


def test_the_map_page_shows_bad_filters_inline_and_keeps_working(api: Any) -> None:
    c, *_ = api
    r = c.get("/?start=2026-11-25%2006:00")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "needs a UTC offset" in r.text and 'id="ew-form-error"' in r.text
    week = c.get("/?range=7d")
    assert week.status_code == 200 and "ew-preset ew-active" in week.text
    assert c.get("/?range=2y").status_code == 422  # not a preset: refused by the schema


def test_pmtiles_archive_is_served_with_range_requests(
    db_url: str, engine: Any, tmp_path: Path
) -> None:
    archive = tmp_path / "basemap.pmtiles"
    archive.write_bytes(bytes(range(256)) * 40)
    settings = web_settings(db_url, tmp_path / "clips")
    c = client(settings.model_copy(update={"web": settings.web.model_copy(
        update={"pmtiles_path": archive})}), engine)  # fmt: skip
    c.headers["Authorization"] = f"Bearer {create_token(engine, 'reader', 'read')}"
    r = c.get("/tiles/basemap.pmtiles", headers={"Range": "bytes=16-31"})
    assert r.status_code == 206 and r.content == bytes(range(16, 32))
    assert r.headers["content-range"] == f"bytes 16-31/{256 * 40}"
    bare = client(web_settings(db_url, tmp_path / "clips"), engine)
    bare.headers["Authorization"] = c.headers["Authorization"]
    assert bare.get("/tiles/basemap.pmtiles").status_code == 404


def test_a_missing_pmtiles_file_is_a_settings_error(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from earwitness.cloud.settings import WebSettings

    with pytest.raises(ValidationError, match="no PMTiles archive"):
        WebSettings(pmtiles_path=tmp_path / "missing.pmtiles")
