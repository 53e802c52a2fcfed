"""Events (start, update, end of a sound that lasted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import desc, func, select
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import insert_ignore, same_text
from earwitness.cloud.db.models import Event, table_of
from earwitness.cloud.db.repo.filters import Filters


def add_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    return insert_ignore(session, table_of(Event), rows, "message_id")


def listing(session: Session, f: Filters, limit: int) -> list[Event]:
    q = select(Event).where(Event.started_at >= f.start, Event.started_at < f.end)
    if f.device:
        q = q.where(Event.device_id == f.device)
    if f.label or f.group:
        q = q.where(same_text(session, Event.label, f.group or f.label or ""))
    q = q.order_by(desc(Event.started_at), desc(Event.id)).limit(limit)
    return list(session.scalars(q))


def after(session: Session, f: Filters, after_id: int, limit: int) -> list[Event]:
    """Events (every phase) with a row id above ``after_id`` in the filters, newest first:
    the live feed. ``after_id`` 0 gives the newest ``limit``."""
    q = select(Event).where(Event.started_at >= f.start, Event.started_at < f.end)
    if after_id:
        q = q.where(Event.id > after_id)
    if f.device:
        q = q.where(Event.device_id == f.device)
    if f.label or f.group:
        q = q.where(same_text(session, Event.label, f.group or f.label or ""))
    return list(session.scalars(q.order_by(desc(Event.id)).limit(limit)))


def latest_per_device(session: Session, f: Filters, limit: int) -> list[tuple[Event, int]]:
    """Each device's newest event in the filters and how many events it had there: the
    map's events layer (one tag per device, not a ring per event)."""
    q = select(
        Event.device_id, func.count(func.distinct(Event.event_id)), func.max(Event.id)
    ).where(Event.started_at >= f.start, Event.started_at < f.end)
    if f.device:
        q = q.where(Event.device_id == f.device)
    if f.label or f.group:
        q = q.where(same_text(session, Event.label, f.group or f.label or ""))
    counts = {
        int(newest): int(n)
        for _d, n, newest in session.execute(q.group_by(Event.device_id).limit(limit)).all()
    }
    if not counts:
        return []
    rows = session.scalars(select(Event).where(Event.id.in_(list(counts))))
    return [(e, counts[e.id]) for e in rows]
