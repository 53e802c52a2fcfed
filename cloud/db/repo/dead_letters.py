"""Messages that could not be stored, kept with the reason instead of vanishing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.orm import Session

from earwitness.cloud.db.models import DeadLetter, table_of


def add_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    if rows:
        session.execute(table_of(DeadLetter).insert(), list(rows))
