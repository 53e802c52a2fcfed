"""Deleting old rows in small batches so the database stays responsive."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from earwitness.cloud.db.models import Clip, DeadLetter, Event, Heartbeat, Inference, SecondOpinion

# Table -> the time column its age is measured by.
TIMED: list[tuple[Any, str]] = [
    (Inference, "window_start"),
    (Event, "started_at"),
    (Heartbeat, "ts"),
    (DeadLetter, "received_at"),
]


def delete_batch(session: Session, model: Any, column: str, cutoff: datetime, batch: int) -> int:
    """Delete up to ``batch`` of the oldest rows older than ``cutoff``; returns how many."""
    col = getattr(model, column)
    pk = model.id
    ids = list(session.scalars(select(pk).where(col < cutoff).order_by(col).limit(batch)))
    if ids:
        session.execute(delete(model).where(pk.in_(ids)))
    return len(ids)


def delete_clip_batch(session: Session, cutoff: datetime, batch: int) -> tuple[int, set[str]]:
    """Delete up to ``batch`` clips older than ``cutoff`` with their second opinions.
    Returns how many, and the storage keys no remaining clip references (audio the caller
    may now delete from the clip store)."""
    old = session.execute(
        select(Clip.id, Clip.storage_key).where(Clip.started_at < cutoff).limit(batch)
    ).all()
    if not old:
        return 0, set()
    ids = [row.id for row in old]
    session.execute(delete(SecondOpinion).where(SecondOpinion.clip_id.in_(ids)))
    session.execute(delete(Clip).where(Clip.id.in_(ids)))
    keys = {row.storage_key for row in old}
    still_used = set(session.scalars(select(Clip.storage_key).where(Clip.storage_key.in_(keys))))
    return len(ids), keys - still_used
