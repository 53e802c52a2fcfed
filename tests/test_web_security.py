"""Web hardening against real databases: the auth matrix of every route, security
headers and the CSP nonce, CSV formula neutralisation, the reviewer's identity."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.models import Review
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.web.auth import create_token, revoke_token
from earwitness.shared.messages import LabelScore
from earwitness.shared.topics import Kind
from tests.factories import Device, wire
from tests.web_helpers import client, seed, seed_alert, web_settings

PAGES = ["/", "/devices/vienna", "/devices/vienna/popup"]  # not in the OpenAPI schema
# Probes need no token; a head file is fetched by devices, its sha256 is the key.
OPEN = {"/api/v1/health", f"/api/v1/heads/{'0' * 64}/artifact"}
ADMIN_READS = {"/api/v1/notifications/dead"}  # error texts may name internal hosts


@pytest.fixture
def app(db_url: str, engine: Any, tmp_path: Path) -> Any:
    seed_alert(engine, tmp_path / "clips", seed(engine, tmp_path / "clips"))
    c = client(web_settings(db_url, tmp_path / "clips"), engine)
    tokens = {
        "read": create_token(engine, "reader", "read"),
        "admin": create_token(engine, "admin-person", "admin"),
        "revoked": create_token(engine, "gone", "admin"),
    }
    revoke_token(engine, "gone")
    return c, tokens, engine, tmp_path


def _routes(c: Any) -> list[tuple[str, str]]:
    spec = c.get("/openapi.json").json()
    out = []
    for path, operations in spec["paths"].items():
        concrete = re.sub(r"\{[^}]*_id\}", "1", path).replace("/devices/1", "/devices/vienna")
        concrete = concrete.replace("{sha256}", "0" * 64).replace("{name}", "gunshot")
        out.extend((method.upper(), concrete) for method in operations)
    return [*out, *[("GET", p) for p in PAGES]]


BODIES = {
    ("POST", "review"): {"correct": True},
    ("POST", "state"): {"state": "acknowledged"},
    ("PATCH", "vienna"): {"name": "Vienna"},
    ("PUT", "gunshot"): {"any_of": [{"label": "Gunshot, gunfire"}]},
}
CREDENTIALS = {
    "none": None,
    "malformed": "Bearer",
    "wrong": "Bearer ew_" + "x" * 43,
    "revoked": "revoked",
    "read": "read",
    "admin": "admin",
}


def test_auth_matrix_of_every_route(app: Any) -> None:
    c, tokens, _engine, _tmp = app
    routes = _routes(c)
    assert len(routes) >= 17
    failures = []
    for method, path in routes:
        admin_only = method in ("POST", "PATCH", "PUT", "DELETE") or path in ADMIN_READS
        for who, cred in CREDENTIALS.items():
            header = tokens.get(cred, cred) if cred else None
            if header and not header.startswith("Bearer"):
                header = f"Bearer {header}"
            r = c.request(
                method,
                path,
                headers={"Authorization": header or ""},
                json=BODIES.get((method, path.rsplit("/", 1)[-1])),
            )
            if path in OPEN:
                expected_ok = True
            elif who in ("none", "malformed", "wrong", "revoked"):
                expected_ok = False
                if r.status_code != 401:
                    failures.append(f"{who} {method} {path}: {r.status_code}, expected 401")
                continue
            elif admin_only and who == "read":
                if r.status_code != 403:
                    failures.append(f"read {method} {path}: {r.status_code}, expected 403")
                continue
            else:
                expected_ok = True
            if expected_ok and r.status_code in (401, 403):
                failures.append(f"{who} {method} {path}: {r.status_code}")
            if r.status_code >= 500:
                failures.append(f"{who} {method} {path}: {r.status_code}")
    assert failures == []


def test_security_headers_and_a_nonce_on_every_script(app: Any) -> None:
    c, tokens, _engine, _tmp = app
    c.headers["Authorization"] = f"Bearer {tokens['read']}"
    for path in ["/", "/devices/vienna", "/docs", "/redoc"]:
        r = c.get(path)
        assert r.status_code == 200, path
        h = r.headers
        assert h["x-content-type-options"] == "nosniff"
        assert h["x-frame-options"] == "DENY"
        assert h["referrer-policy"] == "no-referrer"
        csp = h["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
        tags = re.findall(r"<script\b[^>]*>", r.text)
        assert tags and all(f'nonce="{nonce.group(1)}"' in t for t in tags), path
        markup = re.sub(r"<script\b.*?</script>", "", r.text, flags=re.S | re.I)
        handlers = re.findall(r"<[a-z][^>]*\son[a-z]+\s*=", markup, flags=re.I)
        assert handlers == [], f"{path}: inline event handlers the CSP would refuse: {handlers}"
        assert "cdn." not in r.text  # the API docs come from the app's own assets
    second = c.get("/").headers["content-security-policy"]
    assert second != c.get("/").headers["content-security-policy"]  # a fresh nonce each time
    api = c.get("/api/v1/devices")
    assert api.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api.headers  # JSON runs no scripts


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(app: Any) -> None:
    c, tokens, engine, tmp = app
    dev = Device("csv", "csv-dev", t0=datetime.now(UTC) - timedelta(minutes=1))
    hostile = ['=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3", "\tx"]
    batch = [
        RawMessage(
            dev.topic(Kind.INFERENCE),
            wire(dev.inference(i, LabelScore(index=1, mid="/m/x", name=name, score=0.9))),
            datetime.now(UTC),
        )
        for i, name in enumerate(hostile)
    ]
    BatchStore(engine).store(prepare(batch, FileClipStore(tmp / "clips"), Limits(2**19, 4096)))
    r = c.get(
        "/api/v1/inferences.csv",
        params={"device": "csv-dev"},
        headers={"Authorization": f"Bearer {tokens['read']}"},
    )
    assert r.status_code == 200
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(row["label"] for row in rows) == sorted("'" + h for h in hostile)
    assert all(not row["dbfs"].startswith("'") for row in rows)  # numbers stay numbers


def test_the_reviewer_is_the_tokens_name(app: Any) -> None:
    c, tokens, engine, _tmp = app
    r = c.post(
        "/api/v1/inferences/1/review",
        json={"correct": False, "reviewer": "someone else"},
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    assert r.status_code == 200
    with engine.connect() as conn:
        assert conn.execute(select(Review.reviewer)).scalar_one() == "admin-person"
