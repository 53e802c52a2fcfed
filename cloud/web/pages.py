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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlencode

import folium
from fastapi import APIRouter, Depends, HTTPException, Path, Query
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, PackageLoader, Template, select_autoescape
from markupsafe import Markup
from pydantic import BeforeValidator

from earwitness.cloud.db.repo import alerts, clips, devices, events, inferences
from earwitness.cloud.db.repo.filters import Filters, QueryError
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
LEAFLET_JS = [("leaflet", f"{VENDOR}/leaflet/leaflet.js")]  # the map's scripts need no jQuery
LEAFLET_CSS = [("leaflet_css", f"{VENDOR}/leaflet/leaflet.css")]
PAGE_SCRIPTS = [
    f"{VENDOR}/markercluster/leaflet.markercluster.js",
    f"{VENDOR}/heat/leaflet-heat.js",
    f"{VENDOR}/topojson/topojson-client.min.js",
    # Chart.js and PMTiles/protomaps load on first use (EW.VENDOR in common.js).
    "/static/js/common.js",
    "/static/js/basemap.js",
    "/static/js/charts.js",
    "/static/js/feed.js",
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
DEVICE_PAGE_ROWS = 50  # detections per page of the device page
POPUP_CLIPS = 3  # clips a map popup offers to play


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


RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
          "30d": timedelta(days=30)}  # fmt: skip
RangeQ = Annotated[
    Literal["1h", "24h", "7d", "30d"] | None, BeforeValidator(_blank_to_none), Query(alias="range")
]
MAP_ALERTS_LIMIT = 500  # the newest alerts the map draws
MAP_EVENT_DEVICES = 5000  # devices the events layer tags


@dataclass
class PageFilters:
    """The filter bar's state: what was asked, what applies, and what was wrong with it."""

    params: dict[str, Any]
    filters: Filters
    error: str | None


def page_filters(
    state: StateDep,
    range_: RangeQ = None,
    start: Blank[datetime] = None,
    end: Blank[datetime] = None,
    label: Blank[str] = None,
    group: Blank[str] = None,
    device: Blank[str] = None,
    min_score: Blank[float] = None,
    custom: Blank[str] = None,
) -> PageFilters:
    """Like the API's filters, but a bad value shows as a message on the page (with the
    default range) instead of a JSON error page."""
    if range_ is not None:
        start, end = datetime.now(UTC) - RANGES[range_], None
    params = {
        "range": range_,
        "start": start.isoformat() if start and not range_ else None,
        "end": end.isoformat() if end else None,
        "label": label,
        "group": group,
        "device": device,
        "min_score": min_score,
        "custom": custom,
    }
    try:
        f = _filters(state, start, end, label, group, device, min_score, custom)
        error = None
    except HTTPException as exc:
        f = _filters(state, None, None, None, None, None, None)
        error = str(exc.detail)
        params = {k: None for k in params}
    return PageFilters(params, f, error)


PageFiltersDep = Annotated[PageFilters, Depends(page_filters)]


def _query(params: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in params.items() if v is not None})


def _device_row(d: Any) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name or d.id,
        "site": d.site,
        "lat": d.lat,
        "lon": d.lon,
        "online": bool(d.online),
    }


def _devices_in(session: Any, f: Filters) -> tuple[list[Any], list[Any]]:
    """The devices the filters name (all, or one), and those of them with a location."""
    if f.device:
        one = devices.by_id(session, f.device)
        devs = [one] if one is not None else []
    else:
        devs = devices.list_all(session)
    return devs, [d for d in devs if d.lat is not None and d.lon is not None]


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def map_page(
    state: StateDep, session: SessionDep, caller: BrowserDep, pf: PageFiltersDep
) -> HTMLResponse:
    """The page without its heavy data: the browser fetches `/map/data` (preloaded from
    the head) while it loads and compiles the scripts, so the database's aggregation and
    the page's start-up overlap instead of adding up."""
    web = state.settings.web
    f = pf.filters
    assert f.start is not None and f.end is not None
    devs, located = _devices_in(session, f)
    center = (
        [sum(d.lat for d in located) / len(located), sum(d.lon for d in located) / len(located)]
        if located
        else [20.0, 0.0]
    )
    fmap = folium.Map(
        location=center,
        zoom_start=4 if located else 2,
        maxZoom=19,  # markercluster needs it; folium only sets it on tile layers
        minZoom=1,
        tiles=None,
        prefer_canvas=False,  # SVG: markers are DOM elements (findable, clickable)
        control_scale=True,
        world_copy_jump=True,
    )
    fmap.default_js = LEAFLET_JS
    fmap.default_css = LEAFLET_CSS
    # Live polls: the same filters from the range's start, with no end.
    live_params = {k: v for k, v in pf.params.items() if k not in ("range", "end")}
    query = _query({**live_params, "start": f.start.isoformat()})
    # The data request names the resolved range, so a preset means the same instant in both.
    data_url = "/map/data?" + _query(
        {**pf.params, "range": None, "start": f.start.isoformat(), "end": f.end.isoformat()}
    )
    data = {
        "map": fmap.get_name(),
        "colors": GROUP_COLORS,
        "other": OTHER_COLOR,
        "offline": OFFLINE_COLOR,
        "data_url": data_url,
        "devices": [_device_row(d) for d in located],  # their counts come with /map/data
        "can_write": caller.scope == "admin",
        "basemap": {
            "tile_url": web.tile_url or None,
            "tile_attribution": web.tile_attribution,
            "pmtiles": "/tiles/basemap.pmtiles" if web.pmtiles_path else None,
            "pmtiles_attribution": web.pmtiles_attribution,
            "countries": f"{VENDOR}/world-atlas/countries-110m.json",
            "countries_detail": f"{VENDOR}/world-atlas/countries-50m.json",
            "cities": f"{VENDOR}/cities/cities.json",
        },
        "range": {"start": f.start.isoformat(), "end": f.end.isoformat()},
        "live": {"query": query, "poll_ms": LIVE_POLL_MS},
    }
    legend = [*GROUP_COLORS.items(), ("other", OTHER_COLOR), ("offline", OFFLINE_COLOR)]
    bar = TEMPLATES.get_template(
        "bar.html"
    ).render(
        action="/",
        device_count=len(located),
        total=None,  # filled in from /map/data
        legend=legend,
        params=pf.params,
        error=pf.error,
        start=f.start,
        end=f.end,
        ranges=list(RANGES),
        groups=["", *sorted(GROUP_COLORS)],
        device_ids=sorted(d.id for d in devs)[:2000],
        live=True,
    )
    side = TEMPLATES.get_template("side.html").render()
    head = TEMPLATES.get_template("map_head.html").render(
        styles=PAGE_STYLES, scripts=PAGE_SCRIPTS, preload=data_url
    )
    root = fmap.get_root()
    root.header.add_child(_Html(head))  # type: ignore[attr-defined]
    root.html.add_child(_Html(bar), index=0)  # type: ignore[attr-defined]
    root.html.add_child(_Html(side))  # type: ignore[attr-defined]
    root.html.add_child(  # type: ignore[attr-defined]
        _Html(TEMPLATES.get_template("map_data.html").render(data=data))
    )
    return HTMLResponse(root.render())


@router.get("/map/data", include_in_schema=False)
def map_data(state: StateDep, session: SessionDep, _: BrowserDep, pf: PageFiltersDep) -> Response:
    """What the map draws over the page's devices: their detection counts per group, the
    heatmap, each device's latest event and the alerts, aggregated by the database."""
    web = state.settings.web
    f = pf.filters
    assert f.start is not None and f.end is not None
    spots = inferences.detection_spots(
        session, f, web.detection_min_score, web.map_detections_limit
    )
    counts: dict[str, dict[str, int]] = {}
    for spot in spots:
        per = counts.setdefault(spot.device_id, {})
        per[spot.group] = per.get(spot.group, 0) + spot.count
    heaviest = max((s.count for s in spots), default=1)
    latest_events = [
        {
            "device": ev.device_id,
            "label": ev.label,
            "at": ev.started_at.isoformat(),
            "score": ev.peak_score,
            "count": n,
        }
        for ev, n in events.latest_per_device(session, f, MAP_EVENT_DEVICES)
    ]
    raised = [
        {
            "id": a.id,
            "rule": a.rule,
            "severity": a.severity,
            "state": a.state,
            "lat": a.lat,
            "lon": a.lon,
            "device": a.device_id,
            "labels": [x for x in a.labels.split(",") if x],
            "at": a.started_at.isoformat(),
        }
        for a in alerts.listing(session, f.start, f.end, limit=MAP_ALERTS_LIMIT)
    ]
    payload = {
        "counts": counts,
        "heat": [[s.lat, s.lon, s.count / heaviest] for s in spots],
        "events": latest_events,
        "alerts": raised,
        "total": sum(s.count for s in spots),
        "after_id": max((s.last_id for s in spots), default=0),
        "since": datetime.now(UTC).isoformat(),
    }
    # Plain json.dumps: thousands of small lists through FastAPI's encoder cost more than
    # the rest of the request after the query.
    return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")


@router.get("/tiles/basemap.pmtiles", include_in_schema=False)
def pmtiles_archive(state: StateDep, _: BrowserDep) -> FileResponse:
    """The local basemap archive; the browser reads it with HTTP range requests."""
    path = state.settings.web.pmtiles_path
    if path is None or not path.is_file():
        raise HTTPException(404, "no PMTiles archive configured (web.pmtiles_path)")
    return FileResponse(
        path,
        media_type="application/vnd.pmtiles",
        headers={"Cache-Control": "private, max-age=3600"},
    )


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
    return HTMLResponse(
        TEMPLATES.get_template("popup.html").render(
            device=device,
            detections=latest[device_id],
            clips=clips.listing(session, device_id, POPUP_CLIPS),
        )
    )


@router.get("/devices/{device_id}", response_class=HTMLResponse, include_in_schema=False)
def device_page(
    state: StateDep,
    session: SessionDep,
    caller: BrowserDep,
    pf: PageFiltersDep,
    device_id: Annotated[str, Path(max_length=64)],
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    device = devices.by_id(session, device_id)
    if device is None:
        raise HTTPException(404, "no such device")
    base = pf.filters
    f = Filters(
        base.start, base.end, base.label, base.group, device_id, base.min_score, base.custom
    )
    error = pf.error
    min_score = f.min_score if f.min_score is not None else state.settings.web.detection_min_score
    try:
        rows, next_cursor = inferences.page(
            session, f, DEVICE_PAGE_ROWS, cursor, detections_from=min_score
        )
    except QueryError as exc:
        rows, next_cursor, error = [], None, str(exc)
    params = {**pf.params, "device": None}
    assert f.start is not None and f.end is not None
    api_query = _query({**params, "device": device_id, "range": None,
                        "start": f.start.isoformat(), "end": f.end.isoformat()})  # fmt: skip
    bar = TEMPLATES.get_template("bar.html").render(
        action=f"/devices/{device_id}",
        params=params,
        error=error,
        start=f.start,
        end=f.end,
        ranges=list(RANGES),
        groups=["", *sorted(GROUP_COLORS)],
        legend=[*GROUP_COLORS.items(), ("other", OTHER_COLOR)],
        live=False,
    )
    data = {"colors": GROUP_COLORS, "other": OTHER_COLOR, "query": api_query}
    return HTMLResponse(
        TEMPLATES.get_template("device.html").render(
            bar=Markup(bar),
            device=device,
            detections=rows,
            next_page=_query({**params, "cursor": next_cursor}) if next_cursor else None,
            first_page=_query(params) if cursor else None,
            events=events.listing(session, f, 50),
            clips=clips.listing(session, device_id, 20),
            heartbeats=devices.heartbeats(session, device_id, 20),
            can_review=caller.scope == "admin",
            data=data,
            scripts=[
                f"{VENDOR}/chartjs/chart.umd.min.js",
                "/static/js/common.js",
                "/static/js/charts.js",
            ],
        )
    )
