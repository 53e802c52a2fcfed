"""/api/v1/alerts against real databases: listing and filters, the evidence with its
clips, the lifecycle (admin only, recorded under the token's name), dead notifications."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.repo import alerts
from earwitness.cloud.web.auth import create_token
from tests.web_helpers import client, seed, seed_alert, web_settings


@pytest.fixture
def app(db_url: str, engine: Any, tmp_path: Path) -> Any:
    devices = seed(engine, tmp_path / "clips")
    alert_id = seed_alert(engine, tmp_path / "clips", devices)
    c = client(web_settings(db_url, tmp_path / "clips"), engine)
    read = {"Authorization": f"Bearer {create_token(engine, 'reader', 'read')}"}
    admin = {"Authorization": f"Bearer {create_token(engine, 'night-shift', 'admin')}"}
    return c, read, admin, alert_id, engine


def test_alert_list_filters_and_detail_with_clips(app: Any) -> None:
    c, read, _admin, alert_id, _engine = app
    listed = c.get("/api/v1/alerts", headers=read).json()
    assert [(a["id"], a["rule"], a["state"]) for a in listed] == [(alert_id, "distress", "open")]
    assert listed[0]["labels"] == ["glass_break", "scream"]
    assert c.get("/api/v1/alerts?state=resolved", headers=read).json() == []
    assert c.get("/api/v1/alerts?rule=gunshot", headers=read).json() == []
    assert c.get("/api/v1/alerts?state=bogus", headers=read).status_code == 422

    detail = c.get(f"/api/v1/alerts/{alert_id}", headers=read).json()
    by_label = {e["label"]: e for e in detail["evidence"]}
    assert set(by_label) == {"glass_break", "scream"}
    (clip_id,) = by_label["glass_break"]["clip_ids"]
    assert by_label["scream"]["clip_ids"] == []
    audio = c.get(f"/api/v1/clips/{clip_id}/audio", headers=read)
    assert audio.status_code == 200 and audio.content.startswith(b"fLaC")
    assert [(n["channel"], n["status"]) for n in detail["notifications"]] == [
        ("webhook:ops", "pending")
    ]
    assert c.get("/api/v1/alerts/999999", headers=read).status_code == 404


def test_alert_lifecycle_is_admin_only_and_names_the_token(app: Any) -> None:
    c, read, admin, alert_id, _engine = app
    url = f"/api/v1/alerts/{alert_id}/state"
    assert c.post(url, headers=read, json={"state": "acknowledged"}).status_code == 403
    r = c.post(url, headers=admin, json={"state": "acknowledged", "note": "on my way"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["state"], body["updated_by"], body["note"]) == (
        "acknowledged",
        "night-shift",
        "on my way",
    )
    assert c.post(url, headers=admin, json={"state": "closed"}).status_code == 422
    r = c.post(url, headers=admin, json={"state": "false_alarm"})
    assert r.json()["state"] == "false_alarm"
    states = [a["state"] for a in c.get("/api/v1/alerts", headers=read).json()]
    assert states == ["false_alarm"]


def test_dead_notifications_are_listed_for_admins(app: Any) -> None:
    c, read, admin, alert_id, engine = app
    with transaction(engine) as session:
        (n,) = alerts.notifications_of(session, alert_id)
        alerts.mark_failed(session, n.id, "http://hook: HTTP 500", None)
    assert c.get("/api/v1/notifications/dead", headers=read).status_code == 403
    dead = c.get("/api/v1/notifications/dead", headers=admin).json()
    assert [(d["alert_id"], d["status"], d["last_error"]) for d in dead] == [
        (alert_id, "dead", "http://hook: HTTP 500")
    ]


def test_alert_rules_through_the_api(app: Any, db_url: str, tmp_path: Path) -> None:
    """Rules made, replaced and deleted by admins; listed beside the settings file's,
    which the API refuses to change; bad rules refused naming the field."""
    from earwitness.cloud.settings import CloudSettings
    from tests.alert_helpers import DISTRESS_RULE

    _c, read, admin, _alert_id, engine = app
    settings = CloudSettings(
        database_url=db_url,
        clips={"url": str(tmp_path / "clips")},
        web={"auth": True},
        alerts={"rules": [DISTRESS_RULE]},
    )
    c = client(settings, engine)
    gunshot = {"severity": "critical", "any_of": [{"label": "Gunshot, gunfire", "min_score": 0.6}]}
    url = "/api/v1/alert-rules/gunshot"
    assert c.put(url, headers=read, json=gunshot).status_code == 403
    made = c.put(url, headers=admin, json=gunshot)
    assert made.status_code == 201, made.text
    assert made.json()["definition"]["any_of"] == gunshot["any_of"]
    assert made.json()["updated_by"] == "night-shift"
    replaced = c.put(url, headers=admin, json={**gunshot, "rate_limit_s": 60})
    assert replaced.status_code == 200 and replaced.json()["definition"]["rate_limit_s"] == 60
    listed = c.get("/api/v1/alert-rules", headers=read).json()
    assert [(r["name"], r["source"]) for r in listed] == [
        ("distress", "settings"),
        ("gunshot", "api"),
    ]
    assert listed[0]["definition"]["all_of"][0]["label"] == "glass_break"

    # The settings file's rule is changed there, not here.
    refused = c.put("/api/v1/alert-rules/distress", headers=admin, json=gunshot)
    assert refused.status_code == 409 and "settings file" in refused.text
    assert c.delete("/api/v1/alert-rules/distress", headers=admin).status_code == 409
    # Bad rules: the field at fault is named.
    for body, field in (
        ({"any_of": [{"label": "x"}], "all_of": [{"label": "a"}, {"label": "b"}]}, "exactly one"),
        ({"any_of": [{"label": "x", "min_score": 7}]}, "min_score"),
        ({"any_of": [{"label": "x"}], "within_s": -1}, "within_s"),
        ({"any_of": [{"label": "x"}], "colour": "red"}, "colour"),
        ({"any_of": [{"label": "x"}], "sites": ["s"] * 101}, "sites"),
    ):
        r = c.put("/api/v1/alert-rules/bad", headers=admin, json=body)
        assert r.status_code == 422 and field in r.text, (body, r.text)
    assert (
        c.put("/api/v1/alert-rules/Not%20a%20topic", headers=admin, json=gunshot).status_code == 422
    )

    assert c.delete(url, headers=read).status_code == 403
    assert c.delete(url, headers=admin).status_code == 204
    assert c.delete(url, headers=admin).status_code == 404
    assert [r["name"] for r in c.get("/api/v1/alert-rules", headers=read).json()] == ["distress"]
