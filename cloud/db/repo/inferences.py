"""Inference windows: ingest's inserts, the API's pages, the map's detections, stats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, desc, func, or_, select, update
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import hour_bucket, insert_ignore
from earwitness.cloud.db.models import Inference, table_of
from earwitness.cloud.db.repo.filters import Filters, decode_cursor, encode_cursor

# How far back the map looks for each device's latest detections.
LATEST_DETECTIONS_DAYS = 7
# Hour x label groups the hourly stats return at most (31 days x 24 h x ~130 labels).
STATS_MAX_GROUPS = 100_000


def add_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """Insert, skipping message ids already stored; returns rows inserted."""
    return insert_ignore(session, table_of(Inference), rows, "message_id")


def exists(session: Session, inference_id: int) -> bool:
    found = session.execute(select(Inference.id).where(Inference.id == inference_id)).first()
    return found is not None


def set_review(session: Session, inference_id: int, correct: bool) -> None:
    session.execute(update(Inference).where(Inference.id == inference_id).values(review=correct))


def set_second_opinion(
    session: Session, device_id: str, window_start: datetime, label: str, score: float, agree: bool
) -> None:
    """Copy a clip's first second opinion onto the inference window it was cut at."""
    session.execute(
        update(Inference)
        .where(Inference.device_id == device_id, Inference.window_start == window_start)
        .values(second_label=label, second_score=score, second_agree=agree)
    )


def _filtered(f: Filters) -> Select[Any]:
    q = select(Inference).where(Inference.window_start >= f.start, Inference.window_start < f.end)
    if f.device:
        q = q.where(Inference.device_id == f.device)
    if f.label:
        q = q.where(Inference.label == f.label)
    if f.group:
        q = q.where(Inference.top_group == f.group)
        if f.min_score is not None:
            q = q.where(Inference.top_group_score >= f.min_score)
    elif f.min_score is not None:
        q = q.where(Inference.score >= f.min_score)
    return q


def page(
    session: Session, f: Filters, limit: int, cursor: str | None
) -> tuple[list[Inference], str | None]:
    """Newest first, keyset-paginated on (window_start, id): no gaps or repeats while rows
    arrive, and no OFFSET scans on deep pages."""
    q = _filtered(f)
    if cursor:
        ts, row_id = decode_cursor(cursor)
        q = q.where(
            or_(
                Inference.window_start < ts,
                and_(Inference.window_start == ts, Inference.id < row_id),
            )
        )
    q = q.order_by(desc(Inference.window_start), desc(Inference.id)).limit(limit + 1)
    rows = list(session.scalars(q))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1].window_start, rows[-1].id) if more and rows else None
    return rows, next_cursor


def latest_detections(
    session: Session, device_ids: list[str], min_score: float, per_device: int = 5
) -> dict[str, list[Inference]]:
    """The last few detections (a label group above ``min_score``) of each device, in one
    query (a window function; MariaDB 10.2+, MySQL 8, SQLite 3.25+)."""
    if not device_ids:
        return {}
    ranked = (
        select(
            Inference.id,
            func.row_number()
            .over(
                partition_by=Inference.device_id,
                order_by=[Inference.window_start.desc(), Inference.id.desc()],
            )
            .label("rank"),
        )
        .where(
            Inference.device_id.in_(device_ids),
            Inference.top_group.is_not(None),
            Inference.top_group_score >= min_score,
            Inference.window_start >= datetime.now(UTC) - timedelta(days=LATEST_DETECTIONS_DAYS),
        )
        .subquery()
    )
    q = (
        select(Inference)
        .join(ranked, ranked.c.id == Inference.id)
        .where(ranked.c.rank <= per_device)
        .order_by(Inference.device_id, desc(Inference.window_start), desc(Inference.id))
    )
    out: dict[str, list[Inference]] = {d: [] for d in device_ids}
    for row in session.scalars(q):
        out[row.device_id].append(row)
    return out


def _detection_conditions(f: Filters, min_score: float) -> list[Any]:
    """What makes an inference a detection on the map: located, in a label group above the
    score threshold, inside the filters."""
    conditions = [
        Inference.window_start >= f.start,
        Inference.window_start < f.end,
        Inference.lat.is_not(None),
        Inference.top_group.is_not(None),
        Inference.top_group_score >= (f.min_score if f.min_score is not None else min_score),
    ]
    if f.device:
        conditions.append(Inference.device_id == f.device)
    if f.group:
        conditions.append(Inference.top_group == f.group)
    if f.label:
        conditions.append(Inference.label == f.label)
    return conditions


@dataclass(frozen=True)
class Detection:
    """One detection with a location, as the live map adds it."""

    id: int
    lat: float
    lon: float
    group: str
    score: float
    label: str


def detections_after(
    session: Session, f: Filters, min_score: float, limit: int, after_id: int = 0
) -> list[Detection]:
    """Detections with a location newer than ``after_id``, oldest first."""
    q = (
        select(
            Inference.id,
            Inference.lat,
            Inference.lon,
            Inference.top_group,
            Inference.top_group_score,
            Inference.label,
        )
        .where(*_detection_conditions(f, min_score), Inference.id > after_id)
        .order_by(Inference.id)
        .limit(limit)
    )
    rows: list[Any] = list(session.execute(q).all())  # the conditions exclude NULLs
    return [
        Detection(int(i), float(la), float(lo), g, float(s), lb) for i, la, lo, g, s, lb in rows
    ]


@dataclass(frozen=True)
class DetectionSpot:
    """Detections of one label group heard by one device at one place: what the map
    draws, one marker carrying a count instead of thousands on the same spot."""

    device_id: str
    lat: float
    lon: float
    group: str
    count: int
    max_score: float
    last_id: int


def detection_spots(
    session: Session, f: Filters, min_score: float, limit: int
) -> list[DetectionSpot]:
    """The newest ``limit`` detections in the filters, aggregated in the database."""
    recent = (
        select(
            Inference.id,
            Inference.device_id,
            Inference.lat,
            Inference.lon,
            Inference.top_group,
            Inference.top_group_score,
        )
        .where(*_detection_conditions(f, min_score))
        .order_by(Inference.id.desc())
        .limit(limit)
        .subquery()
    )
    q = select(
        recent.c.device_id,
        recent.c.lat,
        recent.c.lon,
        recent.c.top_group,
        func.count(),
        func.max(recent.c.top_group_score),
        func.max(recent.c.id),
    ).group_by(recent.c.device_id, recent.c.lat, recent.c.lon, recent.c.top_group)
    return [
        DetectionSpot(d, float(la), float(lo), g, int(n), float(s), int(i))
        for d, la, lo, g, n, s, i in session.execute(q).all()
    ]


@dataclass(frozen=True)
class HourCount:
    hour: datetime
    label: str
    count: int


def counts_per_hour(session: Session, f: Filters) -> list[HourCount]:
    """Counts per label per hour, grouped by the database (bounded work: the result has at
    most hours x labels rows, capped at STATS_MAX_GROUPS, whatever the row count)."""
    bucket = hour_bucket(session, Inference.window_start).label("hour")
    q = select(bucket, Inference.label, func.count()).where(
        Inference.window_start >= f.start, Inference.window_start < f.end
    )
    if f.device:
        q = q.where(Inference.device_id == f.device)
    q = q.group_by(bucket, Inference.label).order_by(bucket, Inference.label)
    return [
        HourCount(datetime.fromisoformat(str(hour)).replace(tzinfo=UTC), label, int(n))
        for hour, label, n in session.execute(q.limit(STATS_MAX_GROUPS)).all()
    ]


@dataclass(frozen=True)
class DeviceCount:
    device_id: str
    count: int
    last: datetime | None


def counts_per_device(session: Session, f: Filters | None = None) -> list[DeviceCount]:
    """Windows per device, in the filters' time range (all time without filters)."""
    q = select(Inference.device_id, func.count(), func.max(Inference.window_start))
    if f is not None:
        q = q.where(Inference.window_start >= f.start, Inference.window_start < f.end)
    q = q.group_by(Inference.device_id)
    return [DeviceCount(d, int(n), t) for d, n, t in session.execute(q).all()]
