"""The clips table as a work queue.

MySQL 8 / MariaDB 10.6+: ``SELECT ... FOR UPDATE SKIP LOCKED`` lets any number of workers
claim different clips at once. SQLite serializes writers, so one worker at a time is
right there. A claim is a lease: a worker that dies leaves a clip whose lease expires and
which another worker claims; a clip that fails ``MAX_ATTEMPTS`` times is marked failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, or_, select, update
from sqlalchemy.orm import Session

from cloud.db.models import Clip

MAX_ATTEMPTS = 3


def claim(engine: Engine, worker: str, lease_s: float, limit: int = 1) -> list[Clip]:
    """Lock up to ``limit`` claimable clips, lease them to ``worker``, return them: one
    transaction, one SELECT and one UPDATE however many clips."""
    now = datetime.now(UTC)
    lease_until = now + timedelta(seconds=lease_s)
    claimable = or_(
        Clip.status == "pending",
        (Clip.status == "claimed") & (Clip.lease_until < now),
    )
    query = select(Clip).where(claimable).order_by(Clip.id).limit(limit)
    if engine.dialect.name in ("mysql", "mariadb"):
        query = query.with_for_update(skip_locked=True)
    with Session(engine, expire_on_commit=False) as session, session.begin():
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


def fail(engine: Engine, clip: Clip, worker: str, error: str) -> str:
    """Back to pending, or failed for good after MAX_ATTEMPTS. Returns the new status."""
    status = "failed" if clip.attempts >= MAX_ATTEMPTS else "pending"
    with engine.begin() as conn:
        conn.execute(
            update(Clip)
            .where(Clip.id == clip.id, Clip.worker == worker)
            .values(status=status, error=error[:4000], lease_until=None)
        )
    return status


def release(engine: Engine, clips: list[Clip], worker: str) -> None:
    """Give claimed clips back without counting the attempt: the clip store was down,
    which says nothing about the clips."""
    if not clips:
        return
    with engine.begin() as conn:
        conn.execute(
            update(Clip)
            .where(Clip.id.in_([c.id for c in clips]), Clip.worker == worker)
            .values(status="pending", lease_until=None, attempts=Clip.attempts - 1)
        )
