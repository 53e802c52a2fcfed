"""The map in a real headless Chromium: markers, popup with audio, filters, live updates.
No request may leave localhost."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.web.app import create_app
from earwitness.cloud.web.auth import create_token
from earwitness.shared.topics import Kind
from tests.browser import ARTIFACTS, browser, serve
from tests.factories import wire
from tests.web_helpers import seed, web_settings

pytestmark = pytest.mark.browser


def test_map_in_chromium(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    engine = make_engine(url)
    upgrade(engine)
    devices = seed(engine, tmp_path / "clips")
    token = create_token(engine, "browser", "read")
    app = create_app(
        web_settings(url, tmp_path / "clips"), engine, FileClipStore(tmp_path / "clips")
    )
    requests: list[str] = []
    with serve(app) as base, browser(http_credentials={"username": "me", "password": token}) as ctx:
        page = ctx.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(base + "/")
        page.wait_for_selector("path.ew-device", timeout=10_000)
        assert page.locator("path.ew-device").count() == 3
        assert page.locator("#ew-count").inner_text() == "180"
        # Offline devices are grey.
        assert page.locator("path.ew-device-paris").get_attribute("fill") == "#8c8c8c"
        assert page.locator("path.ew-device-vienna").get_attribute("fill") == "#ff7f0e"
        page.locator("path.ew-device-vienna").click()
        popup = page.locator(".leaflet-popup .ew-popup")
        popup.wait_for(timeout=5000)
        assert "vienna" in popup.inner_text() and "Siren" in popup.inner_text()
        audio = popup.locator("audio.ew-audio")
        assert audio.count() == 1 and re.match(
            r"/api/v1/clips/\d+/audio", audio.get_attribute("src") or ""
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map.png"))
        # Live: a new detection shows up without a reload.
        dev = devices["vienna"]
        msg = dev.inference(500)
        BatchStore(engine).store(
            prepare(
                [RawMessage(dev.topic(Kind.INFERENCE), wire(msg), datetime.now(UTC))],
                FileClipStore(tmp_path / "clips"),
                Limits(2**19, 4096),
            )
        )
        # (no wait_for_function: the page's CSP refuses the eval it needs)
        expect(page.locator("#ew-live")).to_have_text("1", timeout=5000)
        # Filter by group: a shareable URL.
        page.select_option("select[name=group]", "animal")
        page.click("#ew-filter button")
        page.wait_for_url(re.compile(r".*group=animal.*"))
        page.wait_for_selector("path.ew-device")
        assert page.locator("#ew-count").inner_text() == "60"
        page.screenshot(path=str(ARTIFACTS / "map-filtered.png"))
        # The device page.
        page.goto(base + "/devices/berlin")
        assert page.locator("#ew-detections tr").count() == 61
        assert page.locator("svg#ew-levels polyline").count() == 1
    outside = [u for u in requests if not u.startswith(base)]
    assert outside == [], f"requests left localhost: {outside[:5]}"
    engine.dispose()
