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
from sqlalchemy import select, text, update

from cloud.clipstore import ClipStoreError, ClipStoreUnavailable
from cloud.db.migrate import current
from cloud.db.models import Inference, Review, SecondOpinion
from cloud.trust import trust_figures
from cloud.web import queries
from cloud.web.deps import AdminDep, ReadDep, StateDep
from cloud.web.queries import Filters, QueryError

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")

CSV_MAX_ROWS = 100_000

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
def health(state: StateDep) -> dict[str, Any]:
    try:
        with state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return {"ok": True, "schema": current(state.engine)}
    except Exception as exc:  # the health check reports, never raises
        raise HTTPException(503, f"database unreachable: {type(exc).__name__}") from exc


@router.get("/devices", summary="All devices with location, status and last heartbeat")
def list_devices(state: StateDep, _: ReadDep) -> list[dict[str, Any]]:
    return [queries.device_dict(d) for d in queries.devices(state.engine)]


@router.get("/devices/{device_id}")
def get_device(state: StateDep, _: ReadDep, device_id: str) -> dict[str, Any]:
    d = queries.device_by_id(state.engine, device_id)
    if d is None:
        raise HTTPException(404, f"no device {device_id!r}")
    out = queries.device_dict(d)
    out["heartbeats"] = [
        {"ts": h.ts.isoformat(), **h.payload}
        for h in queries.heartbeats(state.engine, device_id, 20)
    ]
    return out


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


@router.get("/inferences", response_model=Page, summary="Inference windows, newest first")
def list_inferences(
    state: StateDep,
    _: ReadDep,
    f: FiltersDep,
    limit: Annotated[int, Query(ge=1)] = 100,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Page:
    if limit > state.settings.web.max_page:
        raise HTTPException(422, f"limit above the maximum page size {state.settings.web.max_page}")
    try:
        rows, next_cursor = queries.inference_page(state.engine, f, limit, cursor)
    except QueryError as exc:
        raise HTTPException(422, str(exc)) from exc
    return Page(items=[queries.inference_dict(r) for r in rows], next_cursor=next_cursor)


@router.get("/inferences.csv", summary="CSV export of a filtered query (up to 100,000 rows)")
def export_inferences(
    state: StateDep,
    _: ReadDep,
    f: FiltersDep,
) -> StreamingResponse:
    columns = [
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

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        cursor = None
        sent = 0
        while sent < CSV_MAX_ROWS:
            page, cursor = queries.inference_page(state.engine, f, 1000, cursor)
            for r in page:
                d = queries.inference_dict(r)
                writer.writerow([d[c] for c in columns])
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
    reviewer: str = Field("web", max_length=128)


@router.post("/inferences/{inference_id}/review", summary="A person's verdict (admin scope)")
def review(state: StateDep, _: AdminDep, inference_id: RowId, body: ReviewIn) -> dict[str, Any]:
    with state.engine.begin() as conn:
        found = conn.execute(select(Inference.id).where(Inference.id == inference_id)).first()
        if found is None:
            raise HTTPException(404, f"no inference {inference_id}")
        conn.execute(
            Review.__table__.insert().values(  # type: ignore[attr-defined]
                inference_id=inference_id,
                correct=body.correct,
                reviewer=body.reviewer,
                note=body.note,
                created_at=datetime.now(UTC),
            )
        )
        conn.execute(
            update(Inference).where(Inference.id == inference_id).values(review=body.correct)
        )
    return {"inference_id": inference_id, "review": body.correct}


@router.get("/events", summary="Events (start/update/end), newest first")
def list_events(
    state: StateDep,
    _: ReadDep,
    start: datetime | None = None,
    end: datetime | None = None,
    label: Label = None,
    group: Group = None,
    device: DeviceQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    f = _filters(state, start, end, label, group, device, None)
    return [queries.event_dict(e) for e in queries.events(state.engine, f, limit)]


@router.get("/clips", summary="Clip metadata, newest first")
def list_clips(
    state: StateDep,
    _: ReadDep,
    device: DeviceQ = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return [queries.clip_dict(c) for c in queries.clips(state.engine, device, limit)]


@router.get(
    "/clips/{clip_id}/audio",
    summary="The clip's FLAC audio",
    response_class=Response,
    responses={200: {"content": {"audio/flac": {}}}},
)
def clip_audio(state: StateDep, _: ReadDep, clip_id: RowId) -> Response:
    clip = queries.clip_by_id(state.engine, clip_id)
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
    state: StateDep,
    _: ReadDep,
    device: DeviceQ = None,
    disagreements: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    q = select(SecondOpinion)
    if device:
        q = q.where(SecondOpinion.device_id == device)
    if disagreements:
        q = q.where(SecondOpinion.top1_agree.is_(False))
    q = q.order_by(SecondOpinion.id.desc()).limit(limit)
    from sqlalchemy.orm import Session

    with Session(state.engine) as s:
        return [
            {
                "clip_id": o.clip_id,
                "device_id": o.device_id,
                "backend": o.backend,
                "label": o.label,
                "score": o.score,
                "edge_label": o.edge_label,
                "edge_score": o.edge_score,
                "top1_agree": o.top1_agree,
                "group_agree": o.group_agree,
                "created_at": o.created_at.isoformat(),
            }
            for o in s.scalars(q)
        ]


@router.get("/trust", summary="Agreement with the second opinion, with 95 % intervals")
def trust(
    state: StateDep,
    _: ReadDep,
    by: Literal["label", "device"] = "label",
    backend: Annotated[str | None, Query(max_length=32)] = None,
) -> list[dict[str, object]]:
    return [t.as_dict() for t in trust_figures(state.engine, by, backend)]


@router.get("/stats/hourly", summary="Counts per label per hour")
def stats_hourly(
    state: StateDep,
    _: ReadDep,
    start: datetime | None = None,
    end: datetime | None = None,
    device: DeviceQ = None,
) -> list[dict[str, Any]]:
    return queries.stats_per_hour(
        state.engine, _filters(state, start, end, None, None, device, None)
    )


@router.get("/stats/devices", summary="Counts per device")
def stats_devices(
    state: StateDep, _: ReadDep, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    return queries.stats_per_device(
        state.engine, _filters(state, start, end, None, None, None, None)
    )


@router.get("/map/updates", summary="Detections newer than after_id, for the live map")
def map_updates(
    state: StateDep,
    _: ReadDep,
    f: FiltersDep,
    after_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
) -> dict[str, Any]:
    live = datetime.max.replace(tzinfo=UTC)  # live: no upper bound
    f = Filters(f.start, live, f.label, f.group, f.device, f.min_score)
    rows = queries.detections_for_map(
        state.engine, f, state.settings.web.detection_min_score, 5000, after_id
    )
    return {
        "items": [
            {"id": i, "lat": la, "lon": lo, "group": g, "score": s, "label": lb}
            for i, la, lo, g, s, lb in rows
        ],
        "last_id": rows[-1][0] if rows else after_id,
    }
