"""The JSON API under /api/v1 (OpenAPI at /docs and /openapi.json)."""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as FastPath
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from earwitness.cloud.clipstore import ClipStoreError, ClipStoreUnavailable
from earwitness.cloud.db.engine import ping, transaction
from earwitness.cloud.db.migrate import current
from earwitness.cloud.db.repo import clips, devices, events, inferences, opinions, reviews
from earwitness.cloud.db.repo.filters import Filters, QueryError
from earwitness.cloud.trust import trust_figures
from earwitness.cloud.web.deps import AdminDep, ReadDep, SessionDep, StateDep
from earwitness.cloud.web.schemas import (
    ClipOut,
    DeviceCountOut,
    DeviceDetailOut,
    DeviceOut,
    EventOut,
    HealthOut,
    HeartbeatOut,
    HourCountOut,
    InferenceOut,
    InferencePage,
    MapDetectionOut,
    MapUpdatesOut,
    OpinionOut,
    ReviewOut,
    TrustOut,
)

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
) -> Filters:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, f"{name} needs a UTC offset, e.g. 2026-11-23T12:00:00Z")
    for name, text, limit in (("label", label, 128), ("group", group, 64), ("device", device, 64)):
        if text is not None and len(text) > limit:  # the pages echo filters: bound them
            raise HTTPException(422, f"{name} longer than {limit} characters")
    try:
        return Filters(start, end, label, group, device, min_score).check(
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
) -> Filters:
    """The filter form's query parameters, checked (422 with the reason)."""
    return _filters(state, start, end, label, group, device, min_score)


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
) -> MapUpdatesOut:
    live = datetime.max.replace(tzinfo=UTC)  # live: no upper bound
    f = Filters(f.start, live, f.label, f.group, f.device, f.min_score)
    found = inferences.detections_after(
        session, f, state.settings.web.detection_min_score, MAP_UPDATES_MAX, after_id
    )
    return MapUpdatesOut(
        items=[MapDetectionOut.model_validate(d.__dict__) for d in found],
        last_id=found[-1].id if found else after_id,
    )
