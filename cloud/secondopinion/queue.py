"""The clips table as a work queue.

MySQL 8 / MariaDB 10.6+: ``SELECT ... FOR UPDATE SKIP LOCKED`` lets any number of workers
claim different clips at once. SQLite serializes writers, so one worker at a time is
right there. A claim is a lease: a worker that dies leaves a clip whose lease expires and
which another worker claims; a clip that fails ``MAX_ATTEMPTS`` times is marked failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, or_, select, update

from cloud.db.models import Clip

MAX_ATTEMPTS = 3


def claim(engine: Engine, worker: str, lease_s: float, limit: int = 1) -> list[Clip]:
    now = datetime.now(UTC)
    claimable = or_(
        Clip.status == "pending",
        (Clip.status == "claimed") & (Clip.lease_until < now),
    )
    mysql = engine.dialect.name in ("mysql", "mariadb")
    with engine.begin() as conn:
        query = select(Clip.id).where(claimable).order_by(Clip.id).limit(limit)
        if mysql:
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        conn.execute(
            update(Clip)
            .where(Clip.id.in_(ids), claimable)
            .values(
                status="claimed",
                worker=worker,
                lease_until=now + timedelta(seconds=lease_s),
                attempts=Clip.attempts + 1,
            )
        )
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        return list(
            session.scalars(
                select(Clip).where(
                    Clip.id.in_(ids), Clip.worker == worker, Clip.status == "claimed"
                )
            )
        )


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
