"""The JSON API under /api/v1 (OpenAPI at /docs and /openapi.json)."""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as FastPath
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, ValidationError

from earwitness.cloud.alerts.rules import RULE_NAME, RuleBody
from earwitness.cloud.clipstore import ClipStoreError, ClipStoreUnavailable
from earwitness.cloud.db.engine import ping, transaction
from earwitness.cloud.db.migrate import current
from earwitness.cloud.db.repo import (
    alert_rules,
    alerts,
    clips,
    devices,
    events,
    heads,
    inferences,
    opinions,
    reviews,
)
from earwitness.cloud.db.repo.filters import Filters, QueryError
from earwitness.cloud.trust import trust_figures
from earwitness.cloud.web import spectrogram
from earwitness.cloud.web.deps import AdminDep, ReadDep, SessionDep, StateDep
from earwitness.cloud.web.schemas import (
    ActivityOut,
    AlertDetailOut,
    AlertEvidenceOut,
    AlertOut,
    AlertRuleOut,
    AlertStateIn,
    ClipOut,
    DeadNotificationOut,
    DeviceCountOut,
    DeviceDetailOut,
    DeviceEditIn,
    DeviceOut,
    EventOut,
    FeedItemOut,
    FeedOut,
    HeadOut,
    HealthOut,
    HeartbeatOut,
    HourCountOut,
    InferenceOut,
    InferencePage,
    LevelsOut,
    MapDetectionOut,
    MapUpdatesOut,
    NotificationOut,
    OpinionOut,
    ReviewOut,
    TrustOut,
)
from earwitness.shared.errors import EarwitnessError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")

CSV_MAX_ROWS = 100_000
CSV_COLUMNS = [
    "id",
    "device_id",
    "window_start",
    "label",
    "score",
    "top_group",
    "top_group_score",
    "dbfs",
    "lat",
    "lon",
    "second_label",
    "second_score",
]
MAP_UPDATES_MAX = 5000  # detections per live-map poll
# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...),
# +cmd|..., @SUM(...)); device strings are hostile, so such cells get a leading quote.
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text. Numbers stay numbers (-23.5 is data)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


RowId = Annotated[int, FastPath(ge=1, le=2**63 - 1, description="row id (BIGINT)")]

Label = Annotated[str | None, Query(max_length=128, description="top-1 label (display name)")]
Group = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
DeviceQ = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Score = Annotated[float | None, Query(ge=0, le=1)]


def _filters(
    state: Any,
    start: datetime | None,
    end: datetime | None,
    label: str | None,
    group: str | None,
    device: str | None,
    min_score: float | None,
    custom: str | None = None,
) -> Filters:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2026-11-23T12:00:00Z")
    for name, text, limit in (("label", label, 128), ("group", group, 64), ("device", device, 64)):
        if text is not None and len(text) > limit:  # the pages echo filters: bound them
            raise HTTPException(422, f"{name} longer than {limit} characters")
    try:
        return Filters(start, end, label, group, device, min_score, custom).check(
            state.settings.web.max_range_days
        )
    except QueryError as exc:
        raise HTTPException(422, str(exc)) from exc


def filter_query(
    state: StateDep,
    start: datetime | None = None,
    end: datetime | None = None,
    label: Label = None,
    group: Group = None,
    device: DeviceQ = None,
    min_score: Score = None,
    custom: Group = None,
) -> Filters:
    """The filter form's query parameters, checked (422 with the reason)."""
    return _filters(state, start, end, label, group, device, min_score, custom)


FiltersDep = Annotated[Filters, Depends(filter_query)]


@router.get("/health", summary="Liveness and schema version (no token needed)")
def health(state: StateDep) -> HealthOut:
    try:
        ping(state.engine)
        return HealthOut(ok=True, schema_=current(state.engine))
    except Exception as exc:  # the health check reports, never raises
        raise HTTPException(503, f"database unreachable: {type(exc).__name__}") from exc


@router.get("/devices", summary="All devices with location, status and last heartbeat")
def list_devices(session: SessionDep, _: ReadDep) -> list[DeviceOut]:
    return [DeviceOut.model_validate(d) for d in devices.list_all(session)]


@router.get("/devices/{device_id}")
def get_device(session: SessionDep, _: ReadDep, device_id: str) -> DeviceDetailOut:
    d = devices.by_id(session, device_id)
    if d is None:
        raise HTTPException(404, f"no device {device_id!r}")
    beats = [
        HeartbeatOut.model_validate({**h.payload, "ts": h.ts})
        for h in devices.heartbeats(session, device_id, 20)
    ]
    return DeviceDetailOut(**DeviceOut.model_validate(d).__dict__, heartbeats=beats)


@router.get("/inferences", summary="Inference windows, newest first")
def list_inferences(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    f: FiltersDep,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> InferencePage:
    if limit > state.settings.web.max_page:
        raise HTTPException(422, f"limit above the maximum page size {state.settings.web.max_page}")
    try:
        rows, next_cursor = inferences.page(session, f, limit, cursor)
    except QueryError as exc:
        raise HTTPException(422, str(exc)) from exc
    return InferencePage(
        items=[InferenceOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get(
    "/inferences.csv",
    summary="CSV export of a filtered query (up to 100,000 rows)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_inferences(state: StateDep, _: ReadDep, f: FiltersDep) -> StreamingResponse:
    def rows() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(CSV_COLUMNS)
        cursor = None
        sent = 0
        while sent < CSV_MAX_ROWS:
            # A transaction per page: the response streams after the request's own
            # session has closed.
            with transaction(state.engine) as session:
                page, cursor = inferences.page(session, f, 1000, cursor)
            for r in page:
                d = InferenceOut.model_validate(r).model_dump(mode="json")
                writer.writerow([csv_cell(d[c]) for c in CSV_COLUMNS])
            sent += len(page)
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
            if cursor is None:
                break

    return StreamingResponse(
        rows(),
        media_type="text/csv",
        headers={"Content-Disposition": "attachment; filename=inferences.csv"},
    )


class ReviewIn(BaseModel):
    model_config = {"extra": "forbid"}
    correct: bool
    note: str | None = Field(None, max_length=2000)
    reviewer: str | None = Field(
        None, max_length=128, description="ignored: the reviewer is the token's name"
    )


@router.post("/inferences/{inference_id}/review", summary="A person's verdict (admin scope)")
def review(session: SessionDep, caller: AdminDep, inference_id: RowId, body: ReviewIn) -> ReviewOut:
    if not reviews.add(session, inference_id, body.correct, caller.name, body.note):
        raise HTTPException(404, f"no inference {inference_id}")
    return ReviewOut(inference_id=inference_id, review=body.correct)


@router.get("/events", summary="Events (start/update/end), newest first")
def list_events(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    start: datetime | None = None,
    end: datetime | None = None,
    label: Label = None,
    group: Group = None,
    device: DeviceQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[EventOut]:
    f = _filters(state, start, end, label, group, device, None)
    return [EventOut.model_validate(e) for e in events.listing(session, f, limit)]


@router.get("/clips", summary="Clip metadata, newest first")
def list_clips(
    session: SessionDep,
    _: ReadDep,
    device: DeviceQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ClipOut]:
    return [ClipOut.model_validate(c) for c in clips.listing(session, device, limit)]


@router.get(
    "/clips/{clip_id}/audio",
    summary="The clip's FLAC audio",
    response_class=Response,
    responses={200: {"content": {"audio/flac": {}}}},
)
def clip_audio(state: StateDep, session: SessionDep, _: ReadDep, clip_id: RowId) -> Response:
    clip = clips.by_id(session, clip_id)
    if clip is None:
        raise HTTPException(404, f"no clip {clip_id}")
    try:
        data = state.store.get(clip.storage_key)
    except ClipStoreUnavailable as exc:
        log.error("clip %s: %s", clip_id, exc)
        raise HTTPException(503, "clip store unavailable, try again later") from exc
    except ClipStoreError as exc:
        raise HTTPException(404, "clip audio not available") from exc
    return Response(
        data, media_type="audio/flac", headers={"Cache-Control": "private, max-age=86400"}
    )


@router.get("/second-opinions", summary="Second opinions, newest first")
def list_second_opinions(
    session: SessionDep,
    _: ReadDep,
    device: DeviceQ = None,
    disagreements: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[OpinionOut]:
    found = opinions.listing(session, device, disagreements, limit)
    return [OpinionOut.model_validate(o) for o in found]


@router.get("/trust", summary="Agreement with the second opinion, with 95 % intervals")
def trust(
    state: StateDep,
    _: ReadDep,
    by: Literal["label", "device"] = "label",
    backend: Annotated[str | None, Query(max_length=32)] = None,
) -> list[TrustOut]:
    return [TrustOut.model_validate(t.as_dict()) for t in trust_figures(state.engine, by, backend)]


@router.get("/stats/hourly", summary="Counts per label per hour")
def stats_hourly(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    start: datetime | None = None,
    end: datetime | None = None,
    device: DeviceQ = None,
) -> list[HourCountOut]:
    f = _filters(state, start, end, None, None, device, None)
    return [
        HourCountOut(hour=c.hour.isoformat(), label=c.label, count=c.count)
        for c in inferences.counts_per_hour(session, f)
    ]


@router.get("/stats/devices", summary="Counts per device")
def stats_devices(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[DeviceCountOut]:
    f = _filters(state, start, end, None, None, None, None)
    return [
        DeviceCountOut(
            device_id=c.device_id, count=c.count, last=c.last.isoformat() if c.last else None
        )
        for c in inferences.counts_per_device(session, f)
    ]


@router.get("/map/updates", summary="Detections newer than after_id, for the live map")
def map_updates(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    f: FiltersDep,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    since: Annotated[
        datetime | None, Query(description="also list devices seen or changed after this")
    ] = None,
) -> MapUpdatesOut:
    now = datetime.now(UTC)
    live = datetime.max.replace(tzinfo=UTC)  # live: no upper bound
    f = Filters(f.start, live, f.label, f.group, f.device, f.min_score, f.custom)
    found = inferences.detections_after(
        session, f, state.settings.web.detection_min_score, MAP_UPDATES_MAX, after_id
    )
    changed = []
    if since is not None:
        if since.tzinfo is None:
            raise HTTPException(422, "since needs a UTC offset")
        changed = devices.changed_since(session, since, MAP_UPDATES_MAX)
    return MapUpdatesOut(
        items=[MapDetectionOut.model_validate(d.__dict__) for d in found],
        last_id=found[-1].id if found else after_id,
        devices=[DeviceOut.model_validate(d) for d in changed],
        now=now,
    )


@router.patch("/devices/{device_id}", summary="Name and place a device (admin scope)")
def edit_device(
    session: SessionDep,
    _: AdminDep,
    device_id: Annotated[str, FastPath(max_length=64)],
    body: DeviceEditIn,
) -> DeviceOut:
    if (body.lat is None) != (body.lon is None):
        raise HTTPException(422, "set both lat and lon, or neither")
    if not devices.edit(session, device_id, body.name, body.lat, body.lon, body.pinned):
        raise HTTPException(404, f"no device {device_id!r}")
    found = devices.by_id(session, device_id)
    assert found is not None
    session.refresh(found)
    return DeviceOut.model_validate(found)


FEED_MAX = 200


@router.get("/feed", summary="Events and alerts, newest first, for the live feed")
def feed(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    f: FiltersDep,
    after_event: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    after_alert: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=FEED_MAX)] = 100,
) -> FeedOut:
    forever = datetime.max.replace(tzinfo=UTC)  # live polls have no upper bound
    live = Filters(f.start, forever, f.label, f.group, f.device)
    found = events.after(session, live if after_event else f, after_event, limit)
    keys = [(e.device_id, e.event_id) for e in found]
    event_clips = clips.of_events(session, keys)
    first_clip = {k: v[0] for k, v in event_clips.items() if v}
    second = opinions.first_of_clips(session, list(first_clip.values()))
    assert f.start is not None and f.end is not None
    raised = [
        a
        for a in alerts.listing(
            session, f.start, forever if after_alert else f.end, None, None, None, limit
        )
        if a.id > after_alert and (not f.device or a.device_id == f.device)
    ]
    names = devices.names(session, {e.device_id for e in found} | {a.device_id for a in raised})
    items = [
        FeedItemOut(
            kind="event",
            id=e.id,
            at=e.started_at,
            device_id=e.device_id,
            device_name=names.get(e.device_id),
            label=e.label,
            score=e.peak_score,
            phase=e.phase,
            event_id=e.event_id,
            duration_s=e.duration_s,
            lat=e.lat,
            lon=e.lon,
            clip_id=first_clip.get((e.device_id, e.event_id)),
            second_label=_second(second, first_clip, e, "label"),
            second_agree=_second(second, first_clip, e, "top1_agree"),
        )
        for e in found
    ] + [
        FeedItemOut(
            kind="alert",
            id=a.id,
            at=a.started_at,
            device_id=a.device_id,
            device_name=names.get(a.device_id),
            label=a.rule,
            lat=a.lat,
            lon=a.lon,
            severity=a.severity,
            state=a.state,
            labels=[x for x in a.labels.split(",") if x],
        )
        for a in raised
    ]
    items.sort(key=lambda i: (i.at, i.kind == "alert", i.id), reverse=True)
    return FeedOut(
        items=items[:limit],
        after_event=max([after_event, *(e.id for e in found)]),
        after_alert=max([after_alert, *(a.id for a in raised)]),
    )


def _second(second: dict[int, Any], first_clip: dict[Any, int], e: Any, field: str) -> Any:
    clip_id = first_clip.get((e.device_id, e.event_id))
    opinion = second.get(clip_id) if clip_id is not None else None
    return getattr(opinion, field) if opinion is not None else None


def bucket_for(start: datetime, end: datetime, bucket: str) -> int:
    """Seconds per chart bucket: ``hour``, ``day`` or ``auto`` (about 48-96 bars)."""
    if bucket == "hour":
        return 3600
    if bucket == "day":
        return 86_400
    span = (end - start).total_seconds()
    for size in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86_400):
        if span / size <= 96:
            return size
    return 86_400


@router.get("/stats/activity", summary="Detections per time bucket and label group")
def stats_activity(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    f: FiltersDep,
    bucket: Literal["auto", "hour", "day"] = "auto",
    per_device: bool = False,
) -> ActivityOut:
    assert f.start is not None and f.end is not None
    size = bucket_for(f.start, f.end, bucket)
    count = min(inferences.MAX_BUCKETS, math.ceil((f.end - f.start).total_seconds() / size))
    min_score = state.settings.web.detection_min_score
    series: dict[str, list[int]] = {}
    cells: list[tuple[str, str, int, int]] = []
    for row in inferences.activity(session, f, min_score, size, per_device):
        if 0 <= row.bucket < count:
            series.setdefault(row.group, [0] * count)[row.bucket] += row.count
            if row.device_id is not None:
                cells.append((row.device_id, row.group, row.bucket, row.count))
    return ActivityOut(
        start=f.start,
        bucket_s=size,
        buckets=count,
        groups=sorted(series),
        series=series,
        cells=cells if per_device else None,
    )


@router.get("/stats/levels", summary="A device's sound level (Leq and maximum) per time bucket")
def stats_levels(
    session: SessionDep,
    _: ReadDep,
    f: FiltersDep,
    bucket: Literal["auto", "hour", "day"] = "auto",
) -> LevelsOut:
    if not f.device:
        raise HTTPException(422, "levels need ?device=")
    assert f.start is not None and f.end is not None
    size = bucket_for(f.start, f.end, bucket)
    count = min(inferences.MAX_BUCKETS, math.ceil((f.end - f.start).total_seconds() / size))
    leq: list[float | None] = [None] * count
    peak: list[float | None] = [None] * count
    for b in inferences.levels(session, f, size):
        if 0 <= b.bucket < count:
            leq[b.bucket], peak[b.bucket] = round(b.leq_dbfs, 2), round(b.max_dbfs, 2)
    return LevelsOut(start=f.start, bucket_s=size, buckets=count, leq_dbfs=leq, max_dbfs=peak)


@router.get(
    "/clips/{clip_id}/spectrogram.png",
    summary="The clip's log-mel spectrogram (the YAMNet frontend's view)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def clip_spectrogram(state: StateDep, session: SessionDep, _: ReadDep, clip_id: RowId) -> Response:
    clip = clips.by_id(session, clip_id)
    if clip is None:
        raise HTTPException(404, f"no clip {clip_id}")
    png = state.spectrograms.get(clip.sha256)
    if png is None:
        try:
            flac = state.store.get(clip.storage_key)
        except ClipStoreUnavailable as exc:
            log.error("clip %s: %s", clip_id, exc)
            raise HTTPException(503, "clip store unavailable, try again later") from exc
        except ClipStoreError as exc:
            raise HTTPException(404, "clip audio not available") from exc
        try:
            png = spectrogram.render(flac)
        except EarwitnessError as exc:
            raise HTTPException(422, f"clip audio cannot be decoded: {exc}") from exc
        state.spectrograms.put(clip.sha256, png)
    return Response(
        png,
        media_type="image/png",
        headers={"Cache-Control": "private, max-age=86400", "ETag": f'"{clip.sha256}"'},
    )


AlertState = Annotated[
    Literal["open", "acknowledged", "resolved", "false_alarm"] | None,
    Query(description="only alerts in this state"),
]
RuleQ = Annotated[str | None, Query(max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]
SiteQ = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ALERT_DEFAULT_DAYS = 7  # the alert list looks back a week unless told otherwise


def _evidence_event(key: str) -> tuple[str, str]:
    """``device/event_id`` (ids never contain a slash) as (device, event id)."""
    device, _, event_id = key.partition("/")
    return device, event_id


def _alert_detail(session: SessionDep, alert: Any) -> AlertDetailOut:
    evidence = alerts.evidence_of(session, alert.id)
    keys = [_evidence_event(e.evidence_key) for e in evidence]
    found = clips.of_events(session, keys)
    return AlertDetailOut(
        **AlertOut.model_validate(alert).__dict__,
        evidence=[
            AlertEvidenceOut.model_validate(e).model_copy(update={"clip_ids": found.get(k, [])})
            for e, k in zip(evidence, keys, strict=True)
        ],
        notifications=[
            NotificationOut.model_validate(n) for n in alerts.notifications_of(session, alert.id)
        ],
    )


@router.get("/alerts", summary="Alerts the rules raised, newest first")
def list_alerts(
    state: StateDep,
    session: SessionDep,
    _: ReadDep,
    start: datetime | None = None,
    end: datetime | None = None,
    alert_state: Annotated[AlertState, Query(alias="state")] = None,
    rule: RuleQ = None,
    site: SiteQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AlertOut]:
    if start is None:
        start = (end or datetime.now(UTC)) - timedelta(days=ALERT_DEFAULT_DAYS)
    f = _filters(state, start, end, None, None, None, None)
    assert f.start is not None and f.end is not None
    found = alerts.listing(session, f.start, f.end, alert_state, rule, site, limit)
    return [AlertOut.model_validate(a) for a in found]


@router.get("/alerts/{alert_id}", summary="One alert with its evidence, clips and notifications")
def get_alert(session: SessionDep, _: ReadDep, alert_id: RowId) -> AlertDetailOut:
    alert = alerts.by_id(session, alert_id)
    if alert is None:
        raise HTTPException(404, f"no alert {alert_id}")
    return _alert_detail(session, alert)


@router.post(
    "/alerts/{alert_id}/state",
    summary="Acknowledge, resolve, reopen or mark a false alarm (admin scope)",
)
def set_alert_state(
    session: SessionDep, caller: AdminDep, alert_id: RowId, body: AlertStateIn
) -> AlertDetailOut:
    if not alerts.set_state(session, alert_id, body.state, caller.name, body.note):
        raise HTTPException(404, f"no alert {alert_id}")
    alert = alerts.by_id(session, alert_id)
    assert alert is not None
    session.refresh(alert)
    return _alert_detail(session, alert)


RuleName = Annotated[
    str,
    FastPath(max_length=64, pattern=RULE_NAME.pattern, description="the rule's name"),
]


def _api_rule(row: Any) -> AlertRuleOut:
    """A stored rule, validated again: a row the schema no longer accepts fails the
    request with the rule's name in the error, so an operator knows which row to fix."""
    try:
        body = RuleBody.model_validate(row.definition)
    except ValidationError as exc:
        raise HTTPException(
            500, f"alert rule {row.name!r} in the database is invalid: {exc.errors()[0]['msg']}"
        ) from exc
    return AlertRuleOut(
        name=row.name,
        source="api",
        definition=body,
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


@router.get("/alert-rules", summary="The rules the alert service runs (settings file and API)")
def list_alert_rules(state: StateDep, session: SessionDep, _: ReadDep) -> list[AlertRuleOut]:
    from_settings = [
        AlertRuleOut(
            name=r.name,
            source="settings",
            definition=RuleBody.model_validate(r.model_dump(exclude={"name"})),
        )
        for r in state.settings.alerts.rules
    ]
    return from_settings + [_api_rule(row) for row in alert_rules.listing(session)]


@router.put(
    "/alert-rules/{name}",
    summary="Create or replace a rule (admin scope); the alert service picks it up",
    responses={201: {"description": "created"}, 409: {"description": "a settings-file rule"}},
)
def put_alert_rule(
    state: StateDep,
    session: SessionDep,
    caller: AdminDep,
    name: RuleName,
    body: RuleBody,
    response: Response,
) -> AlertRuleOut:
    if any(r.name == name for r in state.settings.alerts.rules):
        raise HTTPException(409, f"rule {name!r} is defined in the settings file: change it there")
    if alert_rules.put(session, name, body.model_dump(mode="json"), caller.name):
        response.status_code = 201
    row = alert_rules.by_name(session, name)
    assert row is not None
    return _api_rule(row)


@router.delete(
    "/alert-rules/{name}",
    status_code=204,
    summary="Delete a rule made through the API (admin scope)",
    responses={404: {"description": "no such API rule"}, 409: {"description": "a settings rule"}},
)
def delete_alert_rule(state: StateDep, session: SessionDep, _: AdminDep, name: RuleName) -> None:
    if any(r.name == name for r in state.settings.alerts.rules):
        raise HTTPException(409, f"rule {name!r} is defined in the settings file: remove it there")
    if not alert_rules.remove(session, name):
        raise HTTPException(404, f"no alert rule {name!r} made through the API")


@router.get(
    "/notifications/dead",
    summary="Notifications that were given up on after max_attempts (admin scope)",
)
def dead_notifications(
    session: SessionDep,
    _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadNotificationOut]:
    found = alerts.dead_notifications(session, limit)
    return [DeadNotificationOut.model_validate(n) for n in found]


Sha256 = Annotated[str, FastPath(pattern=r"^[0-9a-f]{64}$", description="sha256 of the head file")]


@router.get("/heads", summary="Custom heads uploaded for devices (earwitness heads upload)")
def list_heads(session: SessionDep, _: ReadDep) -> list[HeadOut]:
    return [HeadOut.model_validate(h) for h in heads.listing(session)]


@router.get(
    "/heads/{sha256}/artifact",
    summary="A head file, by its sha256 (no token: devices fetch it; the hash is the key)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def head_artifact(session: SessionDep, sha256: Sha256) -> Response:
    blob = heads.content(session, sha256)
    if blob is None:
        raise HTTPException(404, "no head with that sha256")
    return Response(
        blob,
        media_type="application/octet-stream",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )
