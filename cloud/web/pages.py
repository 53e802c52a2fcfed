"""HTML pages: the map (`/`), the map popup and a page per device.

Escaping by construction: HTML comes from Jinja2 templates with autoescape
(`cloud/web/templates/`), and data reaches scripts only as a JSON data block that the
static scripts (`cloud/web/static/js/`) parse and show through ``textContent``. Folium
draws the map skeleton and the optional tile layer, nothing with a device's strings in it.
Every script and stylesheet is served by the app itself, so the map works on air-gapped
sites; `cloud/web/security.py` adds the Content-Security-Policy.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import folium
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, Template, select_autoescape
from markupsafe import Markup
from pydantic import BeforeValidator

from earwitness.cloud.db.repo import clips, devices, events, inferences
from earwitness.cloud.web.api import _filters
from earwitness.cloud.web.deps import BrowserDep, SessionDep, StateDep
from earwitness.shared.labels import OTHER_GROUP_COLOR, group_colors

router = APIRouter()

T = TypeVar("T")


def _blank_to_none(value: Any) -> Any:
    """An HTML form submits empty fields as ``name=``: that means "no filter"."""
    return None if value == "" else value


Blank = Annotated[T | None, BeforeValidator(_blank_to_none), Query()]

VENDOR = "/static/vendor"
LEAFLET_JS = [
    ("leaflet", f"{VENDOR}/leaflet/leaflet.js"),
    ("jquery", f"{VENDOR}/jquery/jquery.min.js"),  # folium's own scripts use $()
]
LEAFLET_CSS = [("leaflet_css", f"{VENDOR}/leaflet/leaflet.css")]
PAGE_SCRIPTS = [
    f"{VENDOR}/markercluster/leaflet.markercluster.js",
    f"{VENDOR}/heat/leaflet-heat.js",
]
PAGE_STYLES = [
    f"{VENDOR}/markercluster/MarkerCluster.css",
    f"{VENDOR}/markercluster/MarkerCluster.Default.css",
    "/static/css/earwitness.css",
]

GROUP_COLORS = group_colors()  # shared/data/label_groups.yaml
OTHER_COLOR = OTHER_GROUP_COLOR
OFFLINE_COLOR = "#8c8c8c"
LIVE_POLL_MS = 3000  # new detections show within 5 s
MAP_EVENTS_LIMIT = 2000  # the newest events the events layer considers
DEVICE_PAGE_ROWS = 500  # windows the device page reads for its detections and levels


def _utc(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "never"


TEMPLATES = Environment(
    loader=PackageLoader("earwitness.cloud.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
)


def script_json(value: Any) -> Markup:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` a
    parser could read as markup, no line separators JavaScript would choke on."""
    text = json.dumps(value, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return Markup(text)


TEMPLATES.filters["utc"] = _utc
TEMPLATES.filters["script_json"] = script_json


class _Html(folium.Element):
    """Markup added to Folium's page as a *value*. ``folium.Element(text)`` compiles its
    text as a Jinja template: anything from a device or a URL in it (``{{ ... }}``) would
    run on the server. Here the template is fixed and the markup is its data."""

    _template = Template("{{ this.content }}")

    def __init__(self, content: str) -> None:
        super().__init__()
        self.content = content


def _color(group: str | None, online: bool) -> str:
    if not online:
        return OFFLINE_COLOR
    if group is None:
        return OTHER_COLOR
    return GROUP_COLORS.get(group, OTHER_COLOR)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def map_page(
    state: StateDep,
    session: SessionDep,
    _: BrowserDep,
    start: Blank[datetime] = None,
    end: Blank[datetime] = None,
    label: Blank[str] = None,
    group: Blank[str] = None,
    device: Blank[str] = None,
    min_score: Blank[float] = None,
) -> HTMLResponse:
    web = state.settings.web
    f = _filters(state, start, end, label, group, device, min_score)
    if device:
        one = devices.by_id(session, device)
        devs = [one] if one is not None else []
    else:
        devs = devices.list_all(session)
    located = [d for d in devs if d.lat is not None and d.lon is not None]
    spots = inferences.detection_spots(
        session, f, web.detection_min_score, web.map_detections_limit
    )
    # A device's color: the group of its newest detection in the filtered range.
    newest: dict[str, inferences.DetectionSpot] = {}
    for spot in spots:
        if spot.device_id not in newest or spot.last_id > newest[spot.device_id].last_id:
            newest[spot.device_id] = spot
    center = (
        [sum(d.lat for d in located) / len(located), sum(d.lon for d in located) / len(located)]  # type: ignore[misc]
        if located
        else [20.0, 0.0]
    )
    fmap = folium.Map(
        location=center,
        zoom_start=4 if located else 2,
        maxZoom=19,  # markercluster needs it; folium only sets it on tile layers
        minZoom=1,
        tiles=None,
        prefer_canvas=False,  # SVG: device markers are DOM elements (findable, clickable)
        control_scale=True,
    )
    fmap.default_js = LEAFLET_JS
    fmap.default_css = LEAFLET_CSS
    if web.tile_url:
        folium.TileLayer(web.tile_url, attr=web.tile_attribution or "tiles", name="tiles").add_to(
            fmap
        )
    heaviest = max((s.count for s in spots), default=1)
    # Events: the end of each event with a location, drawn as rings.
    rings = [
        [ev.lat, ev.lon, ev.label, ev.duration_s, ev.peak_score]
        for ev in events.listing(session, f, MAP_EVENTS_LIMIT)
        if ev.phase == "end" and ev.lat is not None and ev.lon is not None
    ]
    params = {
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "label": label,
        "group": group,
        "device": device,
        "min_score": min_score,
    }
    data = {
        "map": fmap.get_name(),
        "colors": GROUP_COLORS,
        "other": OTHER_COLOR,
        "devices": [
            [
                d.lat,
                d.lon,
                _color(newest[d.id].group if d.id in newest else None, d.online),
                d.id,
                d.name or d.id,
            ]
            for d in located
        ],
        "spots": [[s.lat, s.lon, s.count, s.group, s.max_score] for s in spots],
        "heat": [[s.lat, s.lon, s.count / heaviest] for s in spots],
        "events": rings,
        "live": {
            "after_id": max((s.last_id for s in spots), default=0),
            "query": urlencode({k: v for k, v in params.items() if v is not None}),
            "poll_ms": LIVE_POLL_MS,
        },
    }
    legend = [*GROUP_COLORS.items(), ("other", OTHER_COLOR), ("offline", OFFLINE_COLOR)]
    bar = TEMPLATES.get_template("bar.html").render(
        device_count=len(located),
        total=sum(s.count for s in spots),
        legend=legend,
        params=params,
        groups=["", *sorted(GROUP_COLORS)],
    )
    head = TEMPLATES.get_template("map_head.html").render(styles=PAGE_STYLES, scripts=PAGE_SCRIPTS)
    root = fmap.get_root()
    root.header.add_child(_Html(head))  # type: ignore[attr-defined]
    root.html.add_child(_Html(bar), index=0)  # type: ignore[attr-defined]
    root.html.add_child(  # type: ignore[attr-defined]
        _Html(TEMPLATES.get_template("map_data.html").render(data=data))
    )
    root.height = "calc(100% - 60px)"  # type: ignore[attr-defined]
    return HTMLResponse(root.render())


@router.get("/devices/{device_id}/popup", response_class=HTMLResponse, include_in_schema=False)
def device_popup(
    state: StateDep,
    session: SessionDep,
    _: BrowserDep,
    device_id: Annotated[str, Path(max_length=64)],
) -> HTMLResponse:
    """The map popup's content, fetched when the popup opens."""
    device = devices.by_id(session, device_id)
    if device is None:
        raise HTTPException(404, "no such device")
    web = state.settings.web
    latest = inferences.latest_detections(session, [device_id], web.detection_min_score)
    newest_clips = clips.listing(session, device_id, 1)
    return HTMLResponse(
        TEMPLATES.get_template("popup.html").render(
            device=device,
            detections=latest[device_id],
            clip_id=newest_clips[0].id if newest_clips else None,
        )
    )


def _level_points(rows: list[Any]) -> str:
    """The sound level line of the device page, as SVG polyline points (numbers only)."""
    levels = list(reversed([(r.window_start, r.dbfs) for r in rows]))
    if len(levels) < 2:
        return ""
    t0, t1 = levels[0][0], levels[-1][0]
    span = max((t1 - t0).total_seconds(), 1.0)
    return " ".join(
        f"{600 * (t - t0).total_seconds() / span:.1f},{100 - min(100, max(0, db + 100)):.1f}"
        for t, db in levels
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse, include_in_schema=False)
def device_page(
    state: StateDep,
    session: SessionDep,
    caller: BrowserDep,
    device_id: Annotated[str, Path(max_length=64)],
) -> HTMLResponse:
    device = devices.by_id(session, device_id)
    if device is None:
        raise HTTPException(404, "no such device")
    f = _filters(state, None, None, None, None, device_id, None)
    rows, _cursor = inferences.page(session, f, DEVICE_PAGE_ROWS, None)
    min_score = state.settings.web.detection_min_score
    detections = [r for r in rows if r.top_group and (r.top_group_score or 0) >= min_score]
    points = _level_points(rows)
    return HTMLResponse(
        TEMPLATES.get_template("device.html").render(
            device=device,
            level_points=points,
            level_count=len(rows),
            detections=detections[:100],
            events=events.listing(session, f, 50),
            clips=clips.listing(session, device_id, 20),
            heartbeats=devices.heartbeats(session, device_id, 20),
            can_review=caller.scope == "admin",
        )
    )
