"""Clips: ingest's inserts, the API's listings, and the table as the second opinion's
work queue.

MySQL 8 / MariaDB 10.6+: ``SELECT ... FOR UPDATE SKIP LOCKED`` lets any number of workers
claim different clips at once. SQLite serializes writers, so one worker at a time is
right there. A claim is a lease: a worker that dies leaves a clip whose lease expires and
which another worker claims; a clip that fails ``MAX_ATTEMPTS`` times is marked failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import desc, or_, select, update
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import insert_ignore, lock_rows
from earwitness.cloud.db.models import Clip, table_of

MAX_ATTEMPTS = 3


def add_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    return insert_ignore(session, table_of(Clip), rows, "message_id")


def listing(session: Session, device: str | None, limit: int) -> list[Clip]:
    q = select(Clip)
    if device:
        q = q.where(Clip.device_id == device)
    q = q.order_by(desc(Clip.started_at), desc(Clip.id)).limit(limit)
    return list(session.scalars(q))


def by_id(session: Session, clip_id: int) -> Clip | None:
    return session.scalars(select(Clip).where(Clip.id == clip_id)).first()


def claim(session: Session, worker: str, lease_s: float, limit: int = 1) -> list[Clip]:
    """Lock up to ``limit`` claimable clips, lease them to ``worker``, return them: one
    SELECT and one UPDATE however many clips."""
    now = datetime.now(UTC)
    lease_until = now + timedelta(seconds=lease_s)
    claimable = or_(
        Clip.status == "pending",
        (Clip.status == "claimed") & (Clip.lease_until < now),
    )
    query = lock_rows(
        session, select(Clip).where(claimable).order_by(Clip.id).limit(limit), skip_locked=True
    )
    clips = list(session.scalars(query))
    if not clips:
        return []
    session.execute(
        update(Clip)
        .where(Clip.id.in_([c.id for c in clips]))
        .values(
            status="claimed", worker=worker, lease_until=lease_until, attempts=Clip.attempts + 1
        )
        .execution_options(synchronize_session=False)
    )
    for clip in clips:  # what the UPDATE wrote, without reading it back
        clip.status, clip.worker, clip.lease_until = "claimed", worker, lease_until
        clip.attempts += 1
    session.expunge_all()
    return clips


def fail(session: Session, clip: Clip, worker: str, error: str) -> str:
    """Back to pending, or failed for good after MAX_ATTEMPTS. Returns the new status."""
    status = "failed" if clip.attempts >= MAX_ATTEMPTS else "pending"
    session.execute(
        update(Clip)
        .where(Clip.id == clip.id, Clip.worker == worker)
        .values(status=status, error=error[:4000], lease_until=None)
    )
    return status


def release(session: Session, clips: list[Clip], worker: str) -> None:
    """Give claimed clips back without counting the attempt: the clip store was down,
    which says nothing about the clips."""
    if not clips:
        return
    session.execute(
        update(Clip)
        .where(Clip.id.in_([c.id for c in clips]), Clip.worker == worker)
        .values(status="pending", lease_until=None, attempts=Clip.attempts - 1)
    )


def mark_done(session: Session, clip_id: int, worker: str) -> None:
    session.execute(
        update(Clip)
        .where(Clip.id == clip_id, Clip.worker == worker)
        .values(status="done", lease_until=None, error=None)
    )


def of_events(
    session: Session, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[int]]:
    """Clip row ids per (device, event id): the audio behind an alert's evidence."""
    if not keys:
        return {}
    devices = sorted({d for d, _e in keys})
    event_ids = sorted({e for _d, e in keys})
    q = (
        select(Clip.device_id, Clip.event_id, Clip.id)
        .where(Clip.device_id.in_(devices), Clip.event_id.in_(event_ids))
        .order_by(Clip.started_at, Clip.id)
    )
    found: dict[tuple[str, str], list[int]] = {k: [] for k in keys}
    for device_id, event_id, clip_id in session.execute(q):
        key = (str(device_id), str(event_id))
        if key in found:
            found[key].append(int(clip_id))
    return found
