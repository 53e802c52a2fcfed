"""Alert rules made through the API. Stored as the API validated them; the alert service
and the API validate them again on the way out (cloud/alerts/rules.py owns the schema)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import insert_ignore
from earwitness.cloud.db.models import AlertRule, table_of


def listing(session: Session) -> list[AlertRule]:
    return list(session.scalars(select(AlertRule).order_by(AlertRule.name)))


def by_name(session: Session, name: str) -> AlertRule | None:
    return session.scalars(select(AlertRule).where(AlertRule.name == name)).one_or_none()


def put(session: Session, name: str, definition: dict[str, Any], who: str | None) -> bool:
    """Create or replace the rule; True if it was created. Two admins saving the same new
    rule at once: one creates it, the other replaces it (no duplicate-key error)."""
    now = datetime.now(UTC)
    created = insert_ignore(
        session,
        table_of(AlertRule),
        [
            {
                "name": name,
                "definition": definition,
                "created_at": now,
                "updated_at": now,
                "updated_by": who,
            }
        ],
        "name",
    )
    if not created:
        session.execute(
            update(AlertRule)
            .where(AlertRule.name == name)
            .values(definition=definition, updated_at=now, updated_by=who)
        )
    return bool(created)


def remove(session: Session, name: str) -> bool:
    result: Any = session.execute(delete(AlertRule).where(AlertRule.name == name))
    return bool(result.rowcount)
