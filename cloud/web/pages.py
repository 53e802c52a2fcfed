"""HTML pages: the Folium map (`/`) and a page per device. Every script and stylesheet
is served by the app itself, so the map works on air-gapped sites."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

import folium
from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import HTMLResponse
from folium.plugins import FastMarkerCluster, HeatMap
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
    ("jquery", f"{VENDOR}/jquery/jquery.min.js"),  # folium builds popups with $()
]
LEAFLET_CSS = [("leaflet_css", f"{VENDOR}/leaflet/leaflet.css")]
CLUSTER_JS = [("markerclusterjs", f"{VENDOR}/markercluster/leaflet.markercluster.js")]
CLUSTER_CSS = [
    ("markerclustercss", f"{VENDOR}/markercluster/MarkerCluster.css"),
    ("markerclusterdefaultcss", f"{VENDOR}/markercluster/MarkerCluster.Default.css"),
]
HEAT_JS = [("leaflet-heat.js", f"{VENDOR}/heat/leaflet-heat.js")]

GROUP_COLORS = group_colors()  # shared/data/label_groups.yaml
OTHER_COLOR = OTHER_GROUP_COLOR
OFFLINE_COLOR = "#8c8c8c"
LIVE_POLL_MS = 3000  # new detections show within 5 s

PAGE_STYLE = """
<style>
 body { margin: 0; font-family: system-ui, sans-serif; }
 #ew-bar { padding: 6px 10px; background: #20262e; color: #eee; font-size: 14px; }
 #ew-bar form { display: inline; } #ew-bar input, #ew-bar select { font-size: 13px; }
 #ew-bar a { color: #9cf; } .ew-legend span { margin-right: 8px; }
 table.ew { border-collapse: collapse; font-size: 13px; } table.ew td, table.ew th {
   border-bottom: 1px solid #ddd; padding: 2px 6px; text-align: left; }
</style>
"""


def _color(group: str | None, online: bool) -> str:
    if not online:
        return OFFLINE_COLOR
    if group is None:
        return OTHER_COLOR
    return GROUP_COLORS.get(group, OTHER_COLOR)


def _local_assets(element: Any, js: list[tuple[str, str]], css: list[tuple[str, str]]) -> None:
    element.default_js = js
    element.default_css = css


def _fmt_time(ts: datetime | None) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "never"


def _popup(device: Any, detections: list[Any], clip_id: int | None) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(_fmt_time(d.window_start))}</td><td>{e(d.label)}</td>"
        f"<td>{d.score:.2f}</td><td>{e(d.top_group or '')}</td>"
        f"<td>{'—' if d.second_agree is None else ('agrees' if d.second_agree else 'disagrees')}</td></tr>"
        for d in detections
    )
    audio = (
        f'<audio class="ew-audio" controls preload="none" src="/api/v1/clips/{clip_id}/audio">'
        "</audio>"
        if clip_id is not None
        else "<i>no clip stored</i>"
    )
    return (
        f'<div class="ew-popup" data-device="{e(device.id)}"><b>{e(device.name or device.id)}</b>'
        f" &middot; site {e(device.site)}<br>"
        f"{'online' if device.online else 'offline'}, last seen {e(_fmt_time(device.last_seen))}"
        f'<table class="ew"><tr><th>time</th><th>label</th><th>score</th><th>group</th>'
        f"<th>2nd opinion</th></tr>{rows}</table>{audio}<br>"
        f'<a href="/devices/{e(device.id)}">device page</a></div>'
    )


def _filter_form(params: dict[str, Any], groups: list[str]) -> str:
    e = html.escape

    def val(name: str) -> str:
        v = params.get(name)
        return "" if v is None else e(str(v))

    options = "".join(
        f'<option value="{e(g)}"{" selected" if params.get("group") == g else ""}>{e(g)}</option>'
        for g in ["", *groups]
    )
    return (
        '<form id="ew-filter" method="get" action="/">'
        f' from <input name="start" type="text" size="20" value="{val("start")}" placeholder="2026-11-23T00:00:00Z">'
        f' to <input name="end" type="text" size="20" value="{val("end")}">'
        f' group <select name="group">{options}</select>'
        f' label <input name="label" size="12" value="{val("label")}">'
        f' device <input name="device" size="10" value="{val("device")}">'
        f' min score <input name="min_score" size="4" value="{val("min_score")}">'
        ' <button type="submit">apply</button></form>'
    )


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
    _local_assets(fmap, LEAFLET_JS, LEAFLET_CSS)
    if web.tile_url:
        folium.TileLayer(web.tile_url, attr=web.tile_attribution or "tiles", name="tiles").add_to(
            fmap
        )
    # Detections cluster at their device's location; keep the devices clickable above them.
    folium.map.CustomPane("ew-devices", z_index=650).add_to(fmap)
    device_layer = folium.FeatureGroup(name="devices", show=True)
    # One data array and one loop in the browser instead of a folium object per device
    # (rendering 1,000 markers through folium's templates takes seconds); popups are
    # fetched when opened, so they are current and the page stays small.
    device_rows = [
        [
            d.lat,
            d.lon,
            _color(newest[d.id].group if d.id in newest else None, d.online),
            d.id,
            d.name or d.id,
        ]
        for d in located
    ]
    device_layer.add_to(fmap)
    rows_json = json.dumps(device_rows).replace("</", "<" + chr(92) + "/")  # no "</script>"
    device_js = f"""
document.addEventListener('DOMContentLoaded', function () {{  // after folium's map script
  var rows = {rows_json};
  rows.forEach(function (r) {{
    var m = L.circleMarker([r[0], r[1]], {{radius: 9, color: '#222', weight: 1, fill: true,
      fillColor: r[2], fillOpacity: 0.9, pane: 'ew-devices',
      className: 'ew-device ew-device-' + r[3]}});
    var div = document.createElement('div');
    div.textContent = r[4];
    m.bindTooltip(div.innerHTML);
    m.bindPopup('<i>loading ' + div.innerHTML + '</i>', {{maxWidth: 460}});
    m.on('popupopen', function (e) {{
      fetch('/devices/' + encodeURIComponent(r[3]) + '/popup', {{credentials: 'same-origin'}})
        .then(function (resp) {{ return resp.ok ? resp.text() : 'could not load (' + resp.status + ')'; }})
        .then(function (html) {{ e.popup.setContent(html); }});
    }});
    {device_layer.get_name()}.addLayer(m);
  }});
}});"""
    detection_layer = folium.FeatureGroup(name="detections", show=True)
    # Each marker stands for `count` detections; clusters add their markers' counts.
    cluster = FastMarkerCluster(
        [
            [
                s.lat,
                s.lon,
                s.count,
                f"{s.count} {s.group} (max {s.max_score:.2f})",
                GROUP_COLORS.get(s.group, OTHER_COLOR),
            ]
            for s in spots
        ],
        callback="""function (row) {
            var m = L.circleMarker(new L.LatLng(row[0], row[1]), {radius: 4 + Math.min(8,
                Math.log10(row[2]) * 3), color: row[4], count: row[2]});
            m.bindTooltip(row[3]); return m; }""",
        icon_create_function="""function (cluster) {
            var n = 0;
            cluster.getAllChildMarkers().forEach(function (m) { n += m.options.count || 1; });
            var size = n < 100 ? 'small' : (n < 1000 ? 'medium' : 'large');
            return L.divIcon({html: '<div><span>' + n + '</span></div>',
                className: 'marker-cluster marker-cluster-' + size, iconSize: L.point(40, 40)});
        }""",
        name="detections",
    )
    _local_assets(cluster, CLUSTER_JS, CLUSTER_CSS)
    cluster.add_to(detection_layer)
    detection_layer.add_to(fmap)
    heaviest = max((s.count for s in spots), default=1)
    heat = HeatMap(
        [[s.lat, s.lon, s.count / heaviest] for s in spots],
        name=f"heatmap ({group or label or 'all groups'})",
        show=False,
        radius=18,
    )
    _local_assets(heat, HEAT_JS, [])
    heat.add_to(fmap)
    event_layer = folium.FeatureGroup(name="events", show=False)
    for ev in events.listing(session, f, 2000):
        if ev.phase == "end" and ev.lat is not None:
            folium.CircleMarker(
                [ev.lat, ev.lon or 0.0],
                radius=14,
                color=GROUP_COLORS.get(ev.label, OTHER_COLOR),
                fill=False,
                weight=2,
                tooltip=html.escape(f"{ev.label} {ev.duration_s:.1f}s peak {ev.peak_score:.2f}"),
            ).add_to(event_layer)
    event_layer.add_to(fmap)
    folium.LayerControl(collapsed=False).add_to(fmap)
    params = {
        "start": start,
        "end": end,
        "label": label,
        "group": group,
        "device": device,
        "min_score": min_score,
    }
    query = urlencode(
        {
            k: (v.isoformat() if isinstance(v, datetime) else v)
            for k, v in params.items()
            if v is not None
        }
    )
    last_id = max((s.last_id for s in spots), default=0)
    total = sum(s.count for s in spots)
    live = f"""
<script>
(function () {{
  var lastId = {int(last_id)}, count = 0;
  var query = {json.dumps(query)};
  function poll() {{
    fetch('/api/v1/map/updates?after_id=' + lastId + (query ? '&' + query : ''),
          {{credentials: 'same-origin'}})
      .then(function (r) {{ return r.ok ? r.json() : null; }})
      .then(function (data) {{
        if (!data) return;
        data.items.forEach(function (d) {{
          var m = L.circleMarker([d.lat, d.lon], {{radius: 4, count: 1}})
            .bindTooltip(d.label + ' ' + d.score.toFixed(2));
          {cluster.get_name()}.addLayer(m);
          count += 1;
        }});
        lastId = data.last_id;
        document.getElementById('ew-live').textContent = count;
      }}).catch(function (err) {{ console.error('live update failed', err); }});
  }}
  setInterval(poll, {LIVE_POLL_MS});
}})();
</script>"""
    legend = (
        " ".join(f'<span style="color:{c}">&#9679; {g}</span>' for g, c in GROUP_COLORS.items())
        + f' <span style="color:{OTHER_COLOR}">&#9679; other</span>'
        f' <span style="color:{OFFLINE_COLOR}">&#9679; offline</span>'
    )
    bar = (
        f'<div id="ew-bar"><b>Earwitness</b> &middot; {len(located)} devices &middot; '
        f'<span id="ew-count">{total}</span> detections &middot; live: '
        f'<span id="ew-live">0</span> new &middot; <span class="ew-legend">{legend}</span><br>'
        f"{_filter_form(params, sorted(GROUP_COLORS))}</div>"
    )
    fmap.get_root().header.add_child(folium.Element(PAGE_STYLE))  # type: ignore[attr-defined]
    fmap.get_root().html.add_child(folium.Element(bar), index=0)  # type: ignore[attr-defined]
    fmap.get_root().html.add_child(folium.Element(live))  # type: ignore[attr-defined]
    fmap.get_root().script.add_child(folium.Element(device_js))  # type: ignore[attr-defined]
    fmap.get_root().height = "calc(100% - 60px)"  # type: ignore[attr-defined]
    return HTMLResponse(fmap.get_root().render())


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
        raise HTTPException(404, f"no device {device_id!r}")
    web = state.settings.web
    latest = inferences.latest_detections(session, [device_id], web.detection_min_score)
    newest_clips = clips.listing(session, device_id, 1)
    newest_clip = newest_clips[0].id if newest_clips else None
    return HTMLResponse(_popup(device, latest[device_id], newest_clip))


@router.get("/devices/{device_id}", response_class=HTMLResponse, include_in_schema=False)
def device_page(
    state: StateDep,
    session: SessionDep,
    _: BrowserDep,
    device_id: Annotated[str, Query(max_length=64)] | str,
) -> HTMLResponse:
    e = html.escape
    device = devices.by_id(session, device_id)
    if device is None:
        raise HTTPException(404, f"no device {device_id!r}")
    f = _filters(state, None, None, None, None, device_id, None)
    rows, _cursor = inferences.page(session, f, 500, None)
    detections = [
        r
        for r in rows
        if r.top_group and (r.top_group_score or 0) >= state.settings.web.detection_min_score
    ]
    levels = list(reversed([(r.window_start, r.dbfs) for r in rows]))
    svg = ""
    if len(levels) > 1:
        t0, t1 = levels[0][0], levels[-1][0]
        span = max((t1 - t0).total_seconds(), 1.0)
        pts = " ".join(
            f"{600 * (t - t0).total_seconds() / span:.1f},{100 - min(100, max(0, db + 100)):.1f}"
            for t, db in levels
        )
        svg = (
            f'<svg id="ew-levels" width="600" height="100" style="background:#f4f4f4">'
            f'<polyline fill="none" stroke="#1f77b4" points="{pts}"/></svg>'
            f"<br><small>sound level (dBFS, -100..0) over the last {len(levels)} windows</small>"
        )
    det_rows = "".join(
        f'<tr data-id="{r.id}"><td>{e(_fmt_time(r.window_start))}</td><td>{e(r.label)}</td>'
        f"<td>{r.score:.2f}</td><td>{e(r.top_group or '')} {r.top_group_score or 0:.2f}</td>"
        f"<td>{'' if r.second_label is None else e(r.second_label)}</td>"
        f"<td>{'' if r.review is None else ('correct' if r.review else 'wrong')}"
        f' <button onclick="review({r.id}, true)">correct</button>'
        f' <button onclick="review({r.id}, false)">wrong</button></td></tr>'
        for r in detections[:100]
    )
    ev_rows = "".join(
        f"<tr><td>{e(_fmt_time(ev.started_at))}</td><td>{e(ev.phase)}</td><td>{e(ev.label)}</td>"
        f"<td>{ev.duration_s:.1f}s</td><td>{ev.peak_score:.2f}</td></tr>"
        for ev in events.listing(session, f, 50)
    )
    clip_rows = "".join(
        f"<tr><td>{e(_fmt_time(c.started_at))}</td><td>{e(c.reason)}</td><td>{e(c.edge_label)}"
        f' {c.edge_score:.2f}</td><td><audio controls preload="none" '
        f'src="/api/v1/clips/{c.id}/audio"></audio></td></tr>'
        for c in clips.listing(session, device_id, 20)
    )
    hb_rows = "".join(
        f"<tr><td>{e(_fmt_time(h.ts))}</td><td>{h.uptime_s:.0f}s</td><td>{h.windows_dropped}</td>"
        f"<td>{h.outbox_rows}</td><td>{h.outbox_dropped}</td><td>{h.clips_blocked_privacy}</td>"
        f"<td>{'' if h.cpu_temp_c is None else f'{h.cpu_temp_c:.1f} C'}</td></tr>"
        for h in devices.heartbeats(session, device_id, 20)
    )
    body = f"""<!doctype html><html><head><meta charset="utf-8">
<title>{e(device.name or device.id)} · Earwitness</title>{PAGE_STYLE}</head><body>
<div id="ew-bar"><a href="/">map</a> &middot; <b>{e(device.name or device.id)}</b> (site {e(device.site)})
 &middot; {"online" if device.online else "offline"} &middot; last seen {e(_fmt_time(device.last_seen))}
 &middot; model {e(device.model_id or "?")} &middot; version {e(device.software_version or "?")}</div>
<div style="padding:10px">
<h3>Sound level</h3>{svg or "<i>no data</i>"}
<h3>Detections</h3><table class="ew" id="ew-detections"><tr><th>time</th><th>label</th><th>score</th>
<th>group</th><th>second opinion</th><th>review</th></tr>{det_rows}</table>
<h3>Events</h3><table class="ew"><tr><th>start</th><th>phase</th><th>label</th><th>duration</th><th>peak</th></tr>{ev_rows}</table>
<h3>Clips</h3><table class="ew"><tr><th>time</th><th>reason</th><th>edge</th><th>audio</th></tr>{clip_rows}</table>
<h3>Health</h3><table class="ew"><tr><th>heartbeat</th><th>uptime</th><th>dropped windows</th>
<th>outbox</th><th>outbox dropped</th><th>clips withheld (speech)</th><th>CPU</th></tr>{hb_rows}</table>
</div>
<script>
function review(id, ok) {{
  fetch('/api/v1/inferences/' + id + '/review', {{method: 'POST', credentials: 'same-origin',
    headers: {{'Content-Type': 'application/json'}}, body: JSON.stringify({{correct: ok}})}})
    .then(function (r) {{ if (r.ok) location.reload(); else alert('review needs an admin token'); }});
}}
</script></body></html>"""
    return HTMLResponse(body)
