"""`earwitness demo` as a user runs it: rows from every simulated device, the web app
answers, and Chromium sees the devices on the map."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS, browser
from tests.conftest import MODELS
from tests.services import free_port

pytestmark = [pytest.mark.browser]

DEVICES = ["vienna-01", "berlin-01", "paris-01", "madrid-01"]


def _rows(db: Path) -> dict[str, int]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return dict(
                conn.execute(
                    "SELECT device_id, COUNT(*) FROM inferences GROUP BY device_id"
                ).fetchall()
            )
    except sqlite3.OperationalError:  # not migrated yet
        return {}


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "EARWITNESS_MODEL_DIR": str(MODELS)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "earwitness",
            "demo",
            "--seconds",
            "40",
            "--seed",
            "1",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "demo"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        db = tmp_path / "demo" / "earwitness.db"
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline:
            rows = _rows(db)
            if all(rows.get(d, 0) >= 5 for d in DEVICES):
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.5)
        rows = _rows(db)
        assert all(rows.get(d, 0) >= 5 for d in DEVICES), rows
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=5) as r:
            assert r.status == 200
        with browser() as ctx:
            page = ctx.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(".ew-device", timeout=10_000)
            assert page.locator(".ew-device").count() == len(DEVICES)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo-map.png"))
        out, _ = proc.communicate(timeout=40)
        assert proc.returncode == 0, out
        assert f"Open http://127.0.0.1:{port}/" in out and "stopped." in out
    finally:
        if proc.poll() is None:
            proc.kill()
