"""Inference windows: ingest's inserts, the API's pages, the map's detections, stats."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, desc, func, or_, select, update
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import hour_bucket, insert_ignore, same_text, time_bucket
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


def _filtered(session: Session, f: Filters) -> Select[Any]:
    q = select(Inference).where(Inference.window_start >= f.start, Inference.window_start < f.end)
    if f.device:
        q = q.where(Inference.device_id == f.device)
    if f.label:
        q = q.where(same_text(session, Inference.label, f.label))
    if f.group:
        q = q.where(Inference.top_group == f.group)
        if f.min_score is not None:
            q = q.where(Inference.top_group_score >= f.min_score)
    elif f.custom:
        q = q.where(Inference.custom_label == f.custom)
        if f.min_score is not None:
            q = q.where(Inference.custom_score >= f.min_score)
    elif f.min_score is not None:
        q = q.where(Inference.score >= f.min_score)
    if f.group and f.custom:
        q = q.where(Inference.custom_label == f.custom)
    return q


def page(
    session: Session,
    f: Filters,
    limit: int,
    cursor: str | None,
    detections_from: float | None = None,
) -> tuple[list[Inference], str | None]:
    """Newest first, keyset-paginated on (window_start, id): no gaps or repeats while rows
    arrive, and no OFFSET scans on deep pages. ``detections_from``: only windows whose
    top group scores at least this (detections)."""
    q = _filtered(session, f)
    if detections_from is not None:
        q = q.where(Inference.top_group.is_not(None), Inference.top_group_score >= detections_from)
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


def _detection_conditions(
    session: Session, f: Filters, min_score: float, located: bool = True
) -> list[Any]:
    """What makes an inference a detection: in a label group above the score threshold,
    inside the filters, and (on the map, ``located``) with a location."""
    conditions = [
        Inference.window_start >= f.start,
        Inference.window_start < f.end,
        Inference.top_group.is_not(None),
        Inference.top_group_score >= (f.min_score if f.min_score is not None else min_score),
    ]
    if f.device:
        conditions.append(Inference.device_id == f.device)
    if f.group:
        conditions.append(Inference.top_group == f.group)
    if f.label:
        conditions.append(same_text(session, Inference.label, f.label))
    if f.custom:
        conditions.append(Inference.custom_label == f.custom)
    if located:
        conditions.append(Inference.lat.is_not(None))
    return conditions


@dataclass(frozen=True)
class Detection:
    """One detection with a location, as the live map adds it."""

    id: int
    device_id: str
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
            Inference.device_id,
            Inference.lat,
            Inference.lon,
            Inference.top_group,
            Inference.top_group_score,
            Inference.label,
        )
        .where(*_detection_conditions(session, f, min_score), Inference.id > after_id)
        .order_by(Inference.id)
        .limit(limit)
    )
    rows: list[Any] = list(session.execute(q).all())  # the conditions exclude NULLs
    return [
        Detection(int(i), d, float(la), float(lo), g, float(s), lb)
        for i, d, la, lo, g, s, lb in rows
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
    recent = recent_detections(session, f, min_score, limit).subquery()
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


SpotQuery = Select[int, str, float | None, float | None, str | None, float | None]


def recent_detections(session: Session, f: Filters, min_score: float, limit: int) -> SpotQuery:
    """The rows the map groups. Unless a label or custom class is filtered on, every column
    named here is in ix_inferences_time_spot (and the primary key is in every index), so
    the database reads that index, never the rows: for 100,000 detections 346 pages
    instead of 300,000. A test holds the two together."""
    return (
        select(
            Inference.id,
            Inference.device_id,
            Inference.lat,
            Inference.lon,
            Inference.top_group,
            Inference.top_group_score,
        )
        .where(*_detection_conditions(session, f, min_score))
        # Newest by window time: the time index gives this order, so the database stops
        # after `limit` rows instead of sorting every row in range (ordering by id did).
        .order_by(Inference.window_start.desc())
        .limit(limit)
    )


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


MAX_BUCKETS = 1000  # a chart never has more bars than this


@dataclass(frozen=True)
class BucketCount:
    bucket: int  # 0, 1, ... from the range's start
    group: str
    device_id: str | None  # None when counted for the whole fleet
    count: int


def activity(
    session: Session, f: Filters, min_score: float, bucket_s: int, per_device: bool = False
) -> list[BucketCount]:
    """Detections per time bucket and label group (and device), grouped by the database:
    at most buckets x groups (x devices) rows whatever the row count."""
    assert f.start is not None
    bucket = time_bucket(session, Inference.window_start, f.start, bucket_s).label("bucket")
    conditions = _detection_conditions(session, f, min_score, located=False)
    keys: list[Any] = [bucket, Inference.top_group]
    if per_device:
        keys.append(Inference.device_id)
    q = select(*keys, func.count()).where(*conditions).group_by(*keys).order_by(bucket)
    out = []
    for row in session.execute(q.limit(STATS_MAX_GROUPS)).all():
        device = str(row[2]) if per_device else None
        out.append(BucketCount(int(row[0]), str(row[1]), device, int(row[-1])))
    return out


@dataclass(frozen=True)
class LevelBucket:
    bucket: int
    leq_dbfs: float  # the energy average of the windows' levels
    max_dbfs: float
    windows: int


def levels(session: Session, f: Filters, bucket_s: int) -> list[LevelBucket]:
    """A device's sound level per time bucket: Leq (10 log10 of the mean power, the way
    sound level meters average) and the loudest window."""
    assert f.start is not None and f.device is not None
    bucket = time_bucket(session, Inference.window_start, f.start, bucket_s).label("bucket")
    power = func.avg(func.power(10.0, Inference.dbfs / 10.0))
    q = (
        select(bucket, power, func.max(Inference.dbfs), func.count())
        .where(
            Inference.device_id == f.device,
            Inference.window_start >= f.start,
            Inference.window_start < f.end,
        )
        .group_by(bucket)
        .order_by(bucket)
        .limit(MAX_BUCKETS)
    )
    return [
        LevelBucket(int(b), 10 * math.log10(max(float(p), 1e-20)), float(mx), int(n))
        for b, p, mx, n in session.execute(q).all()
    ]
