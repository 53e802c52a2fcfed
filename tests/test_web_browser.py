"""The map and device page in a real headless Chromium with the network offline: the
offline basemap draws, a PMTiles archive the test builds is served by range requests and
drawn, devices, clusters, events and alerts are on the map, the feed gets live events,
charts and spectrograms draw, /docs and /redoc render, the console stays clean, and no
request leaves localhost."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.settings import CloudSettings
from earwitness.cloud.web.app import create_app
from earwitness.cloud.web.auth import create_token
from earwitness.cloud.web.spectrogram import _png
from earwitness.shared.topics import Kind
from tests.browser import ARTIFACTS, browser, serve
from tests.factories import wire
from tests.web_helpers import seed, seed_alert

pytestmark = pytest.mark.browser
TILE_RGB = (42, 157, 143)  # the test archive's tiles: one colour, easy to find on screen


def build_pmtiles(path: Path, max_zoom: int = 3) -> None:
    """A raster PMTiles archive of solid tiles, written with the reference Python writer."""
    import numpy as np
    from pmtiles.tile import Compression, TileType, zxy_to_tileid
    from pmtiles.writer import write

    tile = np.zeros((256, 256, 3), np.uint8)
    tile[:] = TILE_RGB
    png = _png(tile)
    with write(str(path)) as w:
        ids = sorted(
            zxy_to_tileid(z, x, y)
            for z in range(max_zoom + 1)
            for x in range(2**z)
            for y in range(2**z)
        )
        for tile_id in ids:
            w.write_tile(tile_id, png)
        w.finalize(
            {
                "tile_type": TileType.PNG,
                "tile_compression": Compression.NONE,
                "min_zoom": 0,
                "max_zoom": max_zoom,
                "min_lon_e7": -1800000000,
                "min_lat_e7": -850000000,
                "max_lon_e7": 1800000000,
                "max_lat_e7": 850000000,
                "center_zoom": 2,
                "center_lon_e7": 0,
                "center_lat_e7": 0,
            },
            {"name": "earwitness-test", "attribution": "test tiles"},
        )


def _app(tmp_path: Path, **web: Any) -> tuple[Any, Any, dict[str, Any]]:
    url = f"sqlite:///{tmp_path / 'web.db'}"
    engine = make_engine(url)
    upgrade(engine)
    devices = seed(engine, tmp_path / "clips")
    seed_alert(engine, tmp_path / "clips", devices)
    settings = CloudSettings(
        database_url=url,
        clips={"url": str(tmp_path / "clips")},
        web={"auth": True, "max_request_bytes": 4096, "tile_url": "", **web},
    )
    return create_app(settings, engine, FileClipStore(tmp_path / "clips")), engine, devices


def _store(engine: Any, tmp_path: Path, topic: str, msg: Any) -> None:
    raw = RawMessage(topic, wire(msg), datetime.now(UTC))
    BatchStore(engine).store(prepare([raw], FileClipStore(tmp_path / "clips"), Limits(2**19, 4096)))


def _watch(page: Any) -> tuple[list[str], list[str]]:
    requests: list[str] = []
    console: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("console", lambda m: m.type in ("error", "warning") and console.append(m.text))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    return requests, console


def _only_local(requests: list[str]) -> list[str]:
    return [u for u in requests if urlsplit(u).hostname not in ("127.0.0.1", None)]


def test_map_offline_with_feed_alerts_charts_and_local_tiles(tmp_path: Path) -> None:
    archive = tmp_path / "basemap.pmtiles"
    build_pmtiles(archive)
    app, engine, devices = _app(tmp_path, pmtiles_path=str(archive))
    admin = create_token(engine, "night-shift", "admin")
    with serve(app) as base, browser(http_credentials={"username": "me", "password": admin}) as ctx:
        ctx.route(re.compile(r"^(?!http://127\.0\.0\.1).*"), lambda route: route.abort())
        page = ctx.new_page()
        requests, console = _watch(page)
        page.goto(base + "/")
        # The offline basemap: Natural Earth countries as vector paths (1:50m at this zoom),
        # city labels near the view; more of both as the view widens.
        expect(page.locator("path.ew-land")).not_to_have_count(0, timeout=10_000)
        expect(page.locator(".leaflet-tooltip.ew-city", has_text="Paris")).to_be_visible()
        near = page.locator(".ew-city").count()
        assert near > 0
        for _ in range(3):
            page.locator(".leaflet-control-zoom-out").click()
            page.wait_for_timeout(400)
        expect(page.locator(".leaflet-tooltip.ew-city", has_text="Shanghai")).to_be_attached()
        assert page.locator(".ew-city").count() > near
        for _ in range(3):
            page.locator(".leaflet-control-zoom-in").click()
            page.wait_for_timeout(400)
        # The local PMTiles archive, read by range requests and drawn as tiles.
        tiles = page.locator(".ew-pmtiles img")
        expect(tiles).not_to_have_count(0, timeout=5000)
        expect(tiles.first).to_have_js_property("naturalWidth", 256)
        ranged = [u for u in requests if u.endswith("/tiles/basemap.pmtiles")]
        assert ranged, "the PMTiles archive was never read"
        # Devices, coloured by what they heard most; offline ones grey; counts shown.
        expect(page.locator(".ew-device")).to_have_count(3)
        vienna = page.locator(".ew-device-vienna .ew-dev")
        assert vienna.get_attribute("data-color") == "#ff7f0e"  # alarm
        assert page.locator(".ew-device-paris .ew-dev").get_attribute("data-color") == "#8c8c8c"
        assert vienna.inner_text() == "60"
        assert page.locator("#ew-count").inner_text() == "180"
        # The latest event per device as a tag, the alert on top of its device.
        expect(page.locator(".ew-ev")).to_have_count(3)
        expect(page.locator(".ew-alert")).to_have_count(1)
        # The device popup: name, detections, clips with spectrogram and player.
        page.locator(".ew-device-vienna").click()
        popup = page.locator(".leaflet-popup .ew-popup")
        popup.wait_for(timeout=5000)
        assert "vienna" in popup.inner_text() and "Siren" in popup.inner_text()
        audio = popup.locator("audio.ew-audio").first
        assert re.match(r"/api/v1/clips/\d+/audio", audio.get_attribute("src") or "")
        spectrogram = popup.locator("img.ew-spectrogram").first
        expect(spectrogram).to_have_js_property("complete", True)
        assert spectrogram.evaluate("img => img.naturalHeight") == 128
        page.locator(".leaflet-popup-close-button").dispatch_event("click")
        # The alert list refreshes every 10 s and places its alerts again; an unchanged alert
        # keeps its marker element (a click once got lost on an element replaced under it).
        page.evaluate(
            "() => { window.ewMarker = document.querySelector('.ew-alert');"
            " window.ewItem = document.getElementById('ew-alert-list').firstChild;"
            " EW.alertListeners.forEach(fn => fn({id: -1})); }"
        )
        page.wait_for_function(
            "() => document.getElementById('ew-alert-list').firstChild !== window.ewItem"
        )
        assert page.evaluate("() => document.querySelector('.ew-alert') === window.ewMarker")
        # The alert popup: evidence with its clip; an admin acknowledges it.
        page.locator(".ew-alert").click()
        alert_popup = page.locator(".leaflet-popup .ew-alert-popup")
        alert_popup.wait_for(timeout=5000)
        assert "glass_break" in alert_popup.inner_text()
        expect(alert_popup.locator("audio")).to_have_count(1)
        alert_popup.locator("button[data-state=acknowledged]").click()
        expect(page.locator(".ew-alert.ew-state-acknowledged")).to_have_count(1, timeout=5000)
        page.locator(".leaflet-popup-close-button").dispatch_event("click")
        # The feed lists events and the alert, with local times (UTC on hover).
        feed = page.locator("#ew-feed-list li")
        expect(feed).to_have_count(4, timeout=5000)
        title = page.locator("#ew-feed-list time").first.get_attribute("title") or ""
        assert title.endswith("UTC")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "map.png"))
        # Live: a detection and an event stored now show without a reload. The page polls
        # every 3 s (LIVE_POLL_MS), so a 3.5 s wait failed whenever one poll was late; the
        # wait allows for a loaded CI machine (timing targets belong in bench/).
        dev = devices["vienna"]
        _store(engine, tmp_path, dev.topic(Kind.INFERENCE), dev.inference(500))
        ev = dev.event(501)
        _store(
            engine,
            tmp_path,
            dev.topic(Kind.EVENT),
            ev.model_copy(update={"event_id": "ev-live-1", "started_at": datetime.now(UTC)}),
        )
        expect(page.locator("#ew-live")).to_have_text("1", timeout=8000)
        expect(page.locator("#ew-feed-list li.ew-new")).to_have_count(1, timeout=8000)
        expect(vienna).to_have_text("61")
        # Charts draw from the API.
        page.locator(".ew-tab[data-tab=charts]").click()
        expect(page.locator("#ew-chart-activity[data-drawn]")).to_have_count(1, timeout=5000)
        page.screenshot(path=str(ARTIFACTS / "map-charts.png"))
        # The timeline plays the range back: devices show one bucket at a time.
        page.locator("#ew-slider").fill("0")
        page.locator("#ew-slider").dispatch_event("input")
        expect(page.locator("#ew-slider-label")).not_to_have_text("whole range")
        # Filters: presets and a group, as a shareable URL; a bad date is shown inline.
        page.locator("#ew-filter select[name=group]").select_option("animal")
        page.locator("#ew-filter button[type=submit]").click()
        page.wait_for_url(re.compile(r".*group=animal.*"))
        expect(page.locator("#ew-count")).to_have_text("60", timeout=5000)
        page.goto(base + "/?start=2026-11-25%2006:00")
        assert "UTC offset" in page.locator("#ew-form-error").inner_text()
        page.locator("a.ew-preset", has_text="7d").click()
        page.wait_for_url(re.compile(r".*range=7d.*"))
        expect(page.locator(".ew-device")).to_have_count(3)
        # The device page: charts, paged detections, clips with spectrograms.
        page.goto(base + "/devices/berlin?range=24h")
        expect(page.locator("#ew-chart-levels[data-drawn]")).to_have_count(1, timeout=5000)
        expect(page.locator("#ew-chart-activity[data-drawn]")).to_have_count(1)
        assert page.locator("#ew-detections tr").count() == 51  # header + one page of 50
        page.screenshot(path=str(ARTIFACTS / "device.png"), full_page=True)
        page.locator("#ew-older").click()
        expect(page.locator("#ew-detections tr")).to_have_count(11)
        expect(page.locator(".ew-clips img.ew-spectrogram")).to_have_count(1)
        # The API docs, from local assets.
        page.goto(base + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("Earwitness")
        page.goto(base + "/redoc")
        expect(page.locator("h1", has_text="Earwitness")).to_have_count(1, timeout=10_000)
    assert _only_local(requests) == [], "requests left localhost"
    assert console == [], f"console errors: {console}"


def test_online_tiles_are_only_asked_for_when_enabled(tmp_path: Path) -> None:
    """With the OpenStreetMap layer on and no internet, the map asks for one probe tile,
    gives up quietly and keeps the offline basemap."""
    app, engine, _devices = _app(
        tmp_path, tile_url="https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    )
    token = create_token(engine, "reader", "read")
    with serve(app) as base, browser(http_credentials={"username": "me", "password": token}) as ctx:
        ctx.route(re.compile(r"^(?!http://127\.0\.0\.1).*"), lambda route: route.abort())
        page = ctx.new_page()
        requests, _console = _watch(page)
        page.goto(base + "/")
        expect(page.locator("path.ew-land")).not_to_have_count(0, timeout=10_000)
        page.wait_for_timeout(1000)
        assert page.locator(".leaflet-tile-loaded").count() == 0
    outside = _only_local(requests)
    assert outside == ["https://tile.openstreetmap.org/0/0/0.png"], outside
