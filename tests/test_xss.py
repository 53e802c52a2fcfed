"""Stored and reflected XSS: hostile strings from devices and from URLs never run.

Every payload goes through the real broker and real ingest into MariaDB, in every field a
device controls that the pages show (labels of inferences, events and clips, model and
software version); then real Chromium loads the map, opens every popup, hovers markers,
turns on the events layer, receives a live detection, loads the device page and the URLs
that reflect query parameters. A payload that runs calls ``__x(n)``; the page's
Content-Security-Policy reports what it blocks. Either fails the test: escaping must hold
on its own, the CSP is the second line.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from playwright.sync_api import expect
from sqlalchemy import func, select

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.models import Clip, Event, Inference
from earwitness.cloud.web.app import create_app
from earwitness.cloud.web.auth import create_token
from earwitness.shared.messages import LabelScore
from earwitness.shared.topics import Kind
from tests.browser import ARTIFACTS, browser, serve
from tests.factories import Device, wire
from tests.ingest_helpers import Publisher, ingest_settings, running_ingest, wait_for
from tests.services import mariadb_database, unique
from tests.web_helpers import web_settings

pytestmark = [pytest.mark.browser, pytest.mark.mqtt, pytest.mark.mariadb]

PAYLOADS = [
    "<img src=x onerror=__x(1)>",
    "<svg onload=__x(2)>",
    '"><img src=x onerror=__x(3)>',
    "'><img src=x onerror=__x(4)>",
    "</script><script>__x(5)</script>",
    "${__x(6)}",
    "`+__x(7)+`",
    "'+__x(8)+'",
    '"+__x(9)+"',
    "javascript:__x(10)",
    '<a href="javascript:__x(11)">x</a>',
    '<iframe src="javascript:__x(12)">',
    "<body onload=__x(13)>",
    "<details open ontoggle=__x(14)>",
    "<input autofocus onfocus=__x(15)>",
    "\\u003cimg src=x onerror=__x(16)\\u003e",
    "<scr<script>ipt>__x(17)</script>",
    '<math><mi xlink:href="javascript:__x(18)">',
    "{{constructor.constructor('__x(19)')()}}",
    "<style onload=__x(20)></style>",
    "<video><source onerror=__x(21)>",
    "<marquee onstart=__x(22)>",
    "'-__x(23)-'",
    '";__x(24);//',
    "');__x(25);//",
    "</textarea><img src=x onerror=__x(26)>",
    "<!--<img src=--><img src=x onerror=__x(27)>",
    '<object data="javascript:__x(28)">',
    "<img src=x:x onerror=__x&#40;29&#41;>",
    "\\x3cimg src=x onerror=__x(30)\\x3e",
    "<svg><script>__x(31)</script>",
    "#{__x(32)}",
    "<img src=x onerror=eval(atob('X194KDMzKQ=='))>",
    "<img/src/onerror=__x(34)>",
    "\u2028__x(35)\u2029",
    "<base href=//evil.invalid/>",
]
INIT = """
window.__hits = [];
window.__x = function (n) { window.__hits.push(n); };
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def _label(text: str) -> LabelScore:
    return LabelScore(index=390, mid="/m/03kmc9", name=text[:128], score=0.9)


def _devices(site: str, t0: datetime) -> list[Device]:
    """One device per payload, far enough apart that every marker and ring can be hovered."""
    return [
        Device(site, f"xss-{i:02d}", t0=t0, location=(-20.0 + (i // 6) * 8, -40.0 + (i % 6) * 15))
        for i in range(len(PAYLOADS))
    ]


def _hostile_alert(engine: object, devices: list[Device]) -> None:
    """An alert whose evidence carries hostile labels (they come from devices' events)."""
    from earwitness.cloud.db.engine import transaction
    from earwitness.cloud.db.repo import alerts

    dev = devices[0]
    with transaction(engine) as session:  # type: ignore[arg-type]
        ev = session.scalars(select(Event).where(Event.device_id == dev.device)).first()
        assert ev is not None
        alerts.record(
            session,
            f"distress:{dev.device}/xss",
            "distress",
            "critical",
            dev.site,
            [
                alerts.EvidenceRow(
                    f"{dev.device}/xss-{i}",
                    ev.id,
                    dev.device,
                    p[:128],
                    0.9,
                    ev.started_at,
                    ev.lat,
                    ev.lon,
                )
                for i, p in enumerate(PAYLOADS[:2])
            ],
            [],
        )


def _publish_corpus(pub: Publisher, devices: list[Device]) -> None:
    """Each payload in every field its device controls that a page shows."""
    items: list[tuple[str, bytes]] = []
    for i, (dev, payload) in enumerate(zip(devices, PAYLOADS, strict=True)):
        inf = dev.inference(0, label=_label(payload), groups={"alarm": 0.9})
        items.append(
            (dev.topic(Kind.INFERENCE), wire(inf.model_copy(update={"model": payload[:80]})))
        )
        ev = dev.event(1, phase="end").model_copy(update={"label": payload[:128]})
        items.append((dev.topic(Kind.EVENT), wire(ev)))
        clip = dev.clip(2).model_copy(update={"edge_top": [_label(payload)], "model": payload[:80]})
        items.append((dev.topic(Kind.CLIP), wire(clip)))
        if len(payload) <= 40:  # the version field's limit
            hb = dev.heartbeat(3).model_copy(update={"version": payload, "model": payload})
            items.append((dev.topic(Kind.HEARTBEAT), wire(hb)))
            status = dev.status("online", datetime.now(UTC) + timedelta(seconds=i))
            status = status.model_copy(
                update={"version": payload, "model": payload, "name": payload[:128]}
            )
            items.append((dev.topic(Kind.STATUS), wire(status)))
    pub.publish_many(items)


def _assert_clean(page: object, where: str) -> None:
    hits = page.evaluate("() => window.__hits")  # type: ignore[attr-defined]
    csp = page.evaluate("() => window.__csp")  # type: ignore[attr-defined]
    assert hits == [], f"{where}: payloads ran: {hits}"
    assert csp == [], f"{where}: CSP violations (escaping let something through): {csp}"


def test_no_payload_runs_anywhere(tmp_path: Path) -> None:
    n = len(PAYLOADS)
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        site = unique("x")
        devices = _devices(site, datetime.now(UTC) - timedelta(minutes=30))
        pub = Publisher()
        clips_dir = tmp_path / "clips"
        with running_ingest(ingest_settings(url, site), clips_dir):
            _publish_corpus(pub, devices)

            def count(model: object) -> int:
                with engine.connect() as conn:
                    return int(conn.execute(select(func.count()).select_from(model)).scalar_one())

            wait_for(
                lambda: count(Inference) == n and count(Event) == n and count(Clip) == n,
                30.0,
                "the corpus stored",
            )
            _hostile_alert(engine, devices)
            token = create_token(engine, "xss-admin", "admin")
            app = create_app(web_settings(url, clips_dir), engine, FileClipStore(clips_dir))
            console: list[str] = []
            with (
                serve(app) as base,
                browser(http_credentials={"username": "t", "password": token}) as ctx,
            ):
                ctx.add_init_script(INIT)
                page = ctx.new_page()
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.goto(base + "/")
                markers = page.locator(".ew-device")
                expect(markers).to_have_count(n, timeout=10_000)
                tooltip = page.locator(".leaflet-tooltip:not(.ew-city)")
                for marker in markers.all():  # tooltip, then the popup fetched on open
                    page.mouse.move(2, 300)
                    expect(tooltip).to_have_count(0)
                    marker.hover()
                    expect(tooltip).to_have_count(1)
                    marker.click()
                    page.locator(".leaflet-popup .ew-popup").last.wait_for(timeout=5000)
                    page.locator(".leaflet-popup-close-button").last.dispatch_event("click")
                    expect(page.locator(".leaflet-popup")).to_have_count(0)
                    # The popup's auto-pan can move the marker from under a still pointer;
                    # the browser then sends no mouseout when the pointer moves on, and the
                    # tooltip stays (1 run in ~30 in CI). Send the one a moving map would.
                    marker.dispatch_event("mouseout")
                # Each device's latest event, a tag with the hostile label as text.
                tags = page.locator(".ew-ev-icon")
                expect(tags).to_have_count(n)
                for tag in tags.all():
                    page.mouse.move(2, 300)  # off any marker: the last tooltip closes
                    expect(tooltip).to_have_count(0)
                    tag.hover(force=True)
                    expect(tooltip).not_to_have_count(0)
                # The feed shows every event and the alert; the alert's popup and list.
                expect(page.locator("#ew-feed-list li")).to_have_count(n + 1, timeout=5000)
                page.locator(".ew-alert").first.click()
                page.locator(".leaflet-popup .ew-alert-popup").wait_for(timeout=5000)
                page.locator(".leaflet-popup-close-button").last.dispatch_event("click")
                page.locator(".ew-tab[data-tab=alerts]").click()
                expect(page.locator("#ew-alert-list li")).to_have_count(1)
                page.locator(".ew-tab[data-tab=charts]").click()
                expect(page.locator("#ew-chart-activity[data-drawn]")).to_have_count(1)
                page.locator(".ew-tab[data-tab=feed]").click()
                # Live: a hostile label arriving while the page is open, as a detection and
                # as an event in the feed.
                live = devices[0].inference(10, label=_label(PAYLOADS[0]), groups={"alarm": 0.9})
                pub.publish(devices[0].topic(Kind.INFERENCE), wire(live))
                live_event = (
                    devices[1]
                    .event(11)
                    .model_copy(update={"label": PAYLOADS[1], "event_id": "xss-live-event"})
                )
                pub.publish(devices[1].topic(Kind.EVENT), wire(live_event))
                expect(page.locator("#ew-live")).to_have_text("1", timeout=8000)
                expect(page.locator("#ew-feed-list li.ew-new")).to_have_count(1, timeout=8000)
                page.locator("#ew-feed-list li.ew-new").click()
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "xss-map.png"))
                _assert_clean(page, "map")

                for dev in devices:
                    page.goto(f"{base}/devices/{dev.device}")
                    windows = 2 if dev is devices[0] else 1  # device 0 got the live one
                    expect(page.locator("#ew-detections tr")).to_have_count(1 + windows)
                    # admin sees the review buttons
                    assert page.locator("button.ew-review").count() == 2 * windows
                    _assert_clean(page, f"device page {dev.device}")

                # Reflected: every query parameter the pages echo, and the path.
                for payload in PAYLOADS:
                    query = urlencode({"label": payload, "group": payload, "device": payload})
                    page.goto(f"{base}/?{query}")
                    _assert_clean(page, f"/?{query}")
                    page.goto(f"{base}/devices/{quote(payload, safe='')}")
                    _assert_clean(page, "device page path")
                    page.goto(f"{base}/?min_score={quote(payload)}")  # a 422, as JSON text
                    _assert_clean(page, "a refused filter")
            csp_console = [c for c in console if "Content Security Policy" in c]
            assert csp_console == [], csp_console
        pub.close()
        engine.dispose()
