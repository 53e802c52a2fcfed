"""The JSON API against real databases (SQLite and MariaDB)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from earwitness.cloud.db.models import Clip
from earwitness.cloud.web.auth import create_token, revoke_token
from tests.web_helpers import client, seed, web_settings


@pytest.fixture
def api(db_url: str, engine, tmp_path: Path):  # type: ignore[no-untyped-def]
    seed(engine, tmp_path / "clips")
    settings = web_settings(db_url, tmp_path / "clips")
    c = client(settings, engine)
    read = create_token(engine, "reader", "read")
    admin = create_token(engine, "admin", "admin")
    c.headers["Authorization"] = f"Bearer {read}"
    return c, read, admin, engine


def _range() -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "start": (now - timedelta(hours=3)).isoformat(),
        "end": (now + timedelta(hours=1)).isoformat(),
    }


def test_auth_required_and_scopes(api) -> None:  # type: ignore[no-untyped-def]
    c, read, admin, engine = api
    assert c.get("/api/v1/health").status_code == 200  # probes need no token
    assert c.get("/api/v1/devices", headers={"Authorization": ""}).status_code == 401
    assert c.get("/api/v1/devices", headers={"Authorization": "Bearer ew_nope"}).status_code == 401
    assert c.get("/", headers={"Authorization": ""}).headers["www-authenticate"].startswith("Basic")
    r = c.post("/api/v1/inferences/1/review", json={"correct": True})
    assert r.status_code == 403  # read scope cannot review
    r = c.post(
        "/api/v1/inferences/1/review",
        json={"correct": True},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 200
    import base64

    basic = base64.b64encode(f"me:{read}".encode()).decode()
    assert c.get("/api/v1/devices", headers={"Authorization": f"Basic {basic}"}).status_code == 200
    revoke_token(engine, "reader")
    assert c.get("/api/v1/devices").status_code == 401


def test_devices(api) -> None:  # type: ignore[no-untyped-def]
    c, *_ = api
    devices = {d["id"]: d for d in c.get("/api/v1/devices").json()}
    assert set(devices) == {"vienna", "berlin", "paris"}
    assert devices["paris"]["online"] is False and devices["vienna"]["online"] is True
    assert devices["berlin"]["lat"] == pytest.approx(52.52)
    detail = c.get("/api/v1/devices/vienna").json()
    assert detail["heartbeats"][0]["outbox_rows"] == 3
    assert c.get("/api/v1/devices/nowhere").status_code == 404


def test_map_spots_aggregate_the_same_detections_as_the_point_query(api) -> None:  # type: ignore[no-untyped-def]
    from collections import Counter

    from earwitness.cloud.db.engine import transaction
    from earwitness.cloud.db.repo import inferences
    from earwitness.cloud.db.repo.filters import Filters

    c, _read, _admin, engine = api
    now = datetime.now(UTC)
    for group in (None, "animal"):
        f = Filters(now - timedelta(hours=3), now + timedelta(hours=1), None, group, None, None)
        with transaction(engine) as session:
            points = inferences.detections_after(session, f, 0.3, 10_000)
            spots = inferences.detection_spots(session, f, 0.3, 10_000)
        assert points, "the seed has detections"
        expected = Counter((round(p.lat, 6), round(p.lon, 6), p.group) for p in points)
        assert {(round(s.lat, 6), round(s.lon, 6), s.group): s.count for s in spots} == expected
        assert max(s.last_id for s in spots) == max(p.id for p in points)
    # The limit keeps the newest detections.
    with transaction(engine) as session:
        newest = inferences.detection_spots(session, f, 0.3, 5)
    assert sum(s.count for s in newest) == 5
    assert max(s.last_id for s in newest) == max(p.id for p in points)
    # The map popup is fetched per device when it opens.
    popup = c.get("/devices/vienna/popup")
    assert popup.status_code == 200 and "Siren" in popup.text and "ew-audio" in popup.text
    assert c.get("/devices/nowhere/popup").status_code == 404


def test_filters(api) -> None:  # type: ignore[no-untyped-def]
    c, *_ = api
    r = c.get("/api/v1/inferences", params={**_range(), "group": "animal", "limit": 1000})
    items = r.json()["items"]
    assert len(items) == 60 and {i["device_id"] for i in items} == {"berlin"}
    r = c.get("/api/v1/inferences", params={**_range(), "label": "Siren", "device": "vienna"})
    assert {i["label"] for i in r.json()["items"]} == {"Siren"}
    r = c.get("/api/v1/inferences", params={**_range(), "min_score": 0.85})
    assert {i["label"] for i in r.json()["items"]} == {"Speech"}
    r = c.get("/api/v1/inferences", params={**_range(), "group": "alarm", "min_score": 0.9})
    assert r.json()["items"] == []
    events = c.get("/api/v1/events", params=_range()).json()
    assert len(events) == 3 and all(e["phase"] == "end" for e in events)


def test_keyset_pagination_has_no_gaps_or_repeats(api) -> None:  # type: ignore[no-untyped-def]
    c, *_ = api
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {**_range(), "limit": 7}
        if cursor:
            params["cursor"] = cursor
        body = c.get("/api/v1/inferences", params=params).json()
        seen += [i["id"] for i in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 180 and len(set(seen)) == 180 and pages == 26
    everything = c.get("/api/v1/inferences", params={**_range(), "limit": 1000}).json()["items"]
    assert [i["id"] for i in everything] == seen  # same order as one big page


def test_malformed_query_values_are_422(api) -> None:  # type: ignore[no-untyped-def]
    c, *_ = api
    bad = [
        {"limit": "ten"},
        {"limit": 0},
        {"limit": 100_000},
        {"min_score": 2},
        {"start": "yesterday"},
        {"start": "2026-11-23T10:00:00"},  # no UTC offset
        {"cursor": "!!!"},
        {"group": "a b"},
        {"device": "../etc"},
        {"start": "2026-01-01T00:00:00Z", "end": "2026-06-01T00:00:00Z"},  # range too long
        {"start": "2026-06-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        {"end": "0001-01-01T00:00:00Z"},  # found by schemathesis: was a 500
    ]
    for params in bad:
        assert c.get("/api/v1/inferences", params=params).status_code == 422, params


def test_oversized_request_is_413(api) -> None:  # type: ignore[no-untyped-def]
    c, _read, admin, _ = api
    r = c.post(
        "/api/v1/inferences/1/review",
        content=b"{" + b" " * 10_000 + b"}",
        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_clip_download_and_traversal(api, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    c, _read, _admin, engine = api
    clips = c.get("/api/v1/clips").json()
    assert len(clips) == 3
    audio = c.get(clips[0]["audio_url"])
    assert audio.status_code == 200 and audio.content[:4] == b"fLaC"
    assert audio.headers["content-type"] == "audio/flac"
    assert c.get("/api/v1/clips/..%2F..%2Fetc%2Fpasswd/audio").status_code in (404, 422)
    assert c.get("/api/v1/clips/999999/audio").status_code == 404
    assert c.get(f"/api/v1/clips/{2**63}/audio").status_code == 422  # was a 500
    secret = tmp_path / "secret.txt"
    secret.write_text("do not serve")
    with engine.begin() as conn:  # a poisoned storage key must not escape the store
        conn.execute(
            update(Clip).where(Clip.id == clips[0]["id"]).values(storage_key=f"../../{secret.name}")
        )
    r = c.get(clips[0]["audio_url"])
    assert r.status_code == 404 and b"do not serve" not in r.content


def test_review_stats_trust_and_csv(api) -> None:  # type: ignore[no-untyped-def]
    c, _read, admin, _ = api
    first = c.get("/api/v1/inferences", params={**_range(), "device": "vienna", "limit": 1}).json()
    inference_id = first["items"][0]["id"]
    r = c.post(
        f"/api/v1/inferences/{inference_id}/review",
        json={"correct": False},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.json() == {"inference_id": inference_id, "review": False}
    again = c.get("/api/v1/inferences", params={**_range(), "device": "vienna", "limit": 1}).json()
    assert again["items"][0]["review"] is False
    trust = c.get("/api/v1/trust").json()
    assert {"key": "Siren", "reviewed": 1, "reviewed_correct": 0}.items() <= trust[0].items()
    hourly = c.get("/api/v1/stats/hourly", params=_range()).json()
    assert sum(h["count"] for h in hourly) == 180
    # Grouped by the database, the same as bucketing every row by hour in Python.
    rows = c.get("/api/v1/inferences", params={**_range(), "limit": 1000}).json()["items"]
    expected: dict[tuple[str, str], int] = {}
    for row in rows:
        hour = datetime.fromisoformat(row["window_start"]).replace(
            minute=0, second=0, microsecond=0
        )
        key = (hour.isoformat(), row["label"])
        expected[key] = expected.get(key, 0) + 1
    assert {(h["hour"], h["label"]): h["count"] for h in hourly} == expected
    per_device = {d["device_id"]: d["count"] for d in c.get("/api/v1/stats/devices").json()}
    assert per_device == {"vienna": 60, "berlin": 60, "paris": 60}
    csv_text = c.get("/api/v1/inferences.csv", params={**_range(), "device": "berlin"}).text
    lines = csv_text.strip().splitlines()
    assert lines[0].startswith("id,device_id,window_start,label") and len(lines) == 61


def test_no_auth_mode_for_the_demo(db_url: str, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    seed(engine, tmp_path / "clips", per_device=5)
    c = client(web_settings(db_url, tmp_path / "clips", auth=False), engine)
    assert c.get("/api/v1/devices").status_code == 200


def test_production_refuses_no_auth() -> None:
    from pydantic import ValidationError

    from earwitness.cloud.settings import CloudSettings

    with pytest.raises(ValidationError, match="production requires web.auth"):
        CloudSettings(
            environment="production",
            database_url="mysql+pymysql://x@y/z",
            mqtt={"username": "u", "password": "p"},
            web={"auth": False},
        )


def test_every_json_route_has_a_typed_response_model(api) -> None:  # type: ignore[no-untyped-def]
    """/openapi.json describes each field of every JSON answer (no bare ``dict``)."""
    c, _read, _admin, _engine = api
    spec = c.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    checked = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            success = next(code for code in op["responses"] if code.startswith("2"))
            content = op["responses"][success].get("content", {})
            if success == "204":  # no content, by definition (DELETE)
                assert not content, (method, path, content)
                continue
            if "application/json" not in content:
                assert set(content) <= {
                    "text/csv",
                    "audio/flac",
                    "image/png",
                    "application/octet-stream",  # head artifacts
                }, (
                    method,
                    path,
                    content,
                )
                continue
            schema = content["application/json"]["schema"]
            ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
            assert ref, f"{method} {path} answers an untyped {schema}"
            model = components[ref.rsplit("/", 1)[-1]]
            assert model.get("properties"), f"{method} {path}: {ref} has no fields"
            checked += 1
    assert checked >= 12


def test_the_map_query_reads_only_its_covering_index() -> None:
    """Every column the map's detection query names (selected, filtered on, ordered by) is
    in ix_inferences_time_spot, so MySQL answers from that index without row lookups. A
    column added to the query but not to the index fails here, not at 20 M rows."""
    from sqlalchemy import Column
    from sqlalchemy.orm import Session
    from sqlalchemy.sql import visitors

    from earwitness.cloud.db.models import Inference
    from earwitness.cloud.db.repo import inferences
    from earwitness.cloud.db.repo.filters import Filters

    index = next(i for i in Inference.__table__.indexes if i.name == "ix_inferences_time_spot")
    covered = {c.name for c in index.columns} | {"id"}  # the primary key is in every index
    assert next(iter(index.columns)).name == "window_start"  # it gives the time order
    now = datetime.now(UTC)
    for group, device in ((None, None), ("alarm", None), ("alarm", "vienna")):
        f = Filters(now - timedelta(days=1), now, None, group, device, None)
        q = inferences.recent_detections(Session(), f, 0.3, 1000)
        named = {
            e.name
            for e in visitors.iterate(q, {"column_collections": False})
            if isinstance(e, Column) and e.table is Inference.__table__
        }
        assert {"window_start", "top_group_score", "lat"} <= named  # the walk sees them
        assert named <= covered, f"not in the index: {named - covered}"
