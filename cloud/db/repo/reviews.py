"""A person's verdict on an inference window."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from earwitness.cloud.db.models import Review, table_of
from earwitness.cloud.db.repo import inferences


def add(
    session: Session, inference_id: int, correct: bool, reviewer: str, note: str | None
) -> bool:
    """Record the review and mark the window; False when there is no such window."""
    if not inferences.exists(session, inference_id):
        return False
    session.execute(
        table_of(Review)
        .insert()
        .values(
            inference_id=inference_id,
            correct=correct,
            reviewer=reviewer,
            note=note,
            created_at=datetime.now(UTC),
        )
    )
    inferences.set_review(session, inference_id, correct)
    return True
