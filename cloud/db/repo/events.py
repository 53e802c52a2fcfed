"""Events (start, update, end of a sound that lasted)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import desc, select
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import insert_ignore
from earwitness.cloud.db.models import Event, table_of
from earwitness.cloud.db.repo.filters import Filters


def add_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    return insert_ignore(session, table_of(Event), rows, "message_id")


def listing(session: Session, f: Filters, limit: int) -> list[Event]:
    q = select(Event).where(Event.started_at >= f.start, Event.started_at < f.end)
    if f.device:
        q = q.where(Event.device_id == f.device)
    if f.label or f.group:
        q = q.where(Event.label == (f.group or f.label))
    q = q.order_by(desc(Event.started_at), desc(Event.id)).limit(limit)
    return list(session.scalars(q))
