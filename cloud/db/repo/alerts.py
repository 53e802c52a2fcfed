"""Alerts, their evidence, their notifications and the engine's read cursor.

Every write here is idempotent (unique fingerprint, unique evidence per alert, unique
notification per alert and channel), so two alert replicas, or one replaying after a
restart, make the same rows once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import desc, or_, select, update
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import greatest, insert_ignore, lock_rows, upsert
from earwitness.cloud.db.models import (
    Alert,
    AlertCursor,
    AlertEvidence,
    Event,
    Notification,
    table_of,
)

STATES = ("open", "acknowledged", "resolved", "false_alarm")


def events_after(session: Session, after_id: int, limit: int) -> list[Event]:
    q = select(Event).where(Event.id > after_id).order_by(Event.id).limit(limit)
    return list(session.scalars(q))


def events_since(session: Session, since: datetime, limit: int) -> list[Event]:
    """Recent events by their start time: what the engine re-reads when it starts."""
    q = select(Event).where(Event.started_at >= since).order_by(Event.id).limit(limit)
    return list(session.scalars(q))


def cursor(session: Session, name: str) -> int:
    row = session.get(AlertCursor, name)
    return int(row.event_id) if row else 0


def move_cursor(session: Session, name: str, event_id: int) -> None:
    """Forward only: two replicas never move it back."""
    now = datetime.now(UTC)
    upsert(
        session,
        table_of(AlertCursor),
        [{"name": name, "event_id": event_id, "updated_at": now}],
        ["name"],
        lambda new, table: {
            "event_id": greatest(session, table.c.event_id, new.event_id),
            "updated_at": new.updated_at,
        },
    )


@dataclass(frozen=True)
class EvidenceRow:
    key: str
    event_row_id: int
    device_id: str
    label: str
    score: float
    at: datetime
    lat: float | None
    lon: float | None


def record(
    session: Session,
    fingerprint: str,
    rule: str,
    severity: str,
    site: str,
    evidence: Sequence[EvidenceRow],
    channels: Sequence[str],
) -> int:
    """Create the alert if its fingerprint is new, add the evidence, queue one
    notification per channel (each once per alert). Returns the alert id."""
    now = datetime.now(UTC)
    first = min(evidence, key=lambda e: e.at)
    insert_ignore(
        session,
        table_of(Alert),
        [
            {
                "fingerprint": fingerprint,
                "rule": rule,
                "severity": severity,
                "site": site,
                "device_id": first.device_id,
                "labels": ",".join(sorted({e.label for e in evidence}))[:400],
                "started_at": first.at,
                "last_evidence_at": max(e.at for e in evidence),
                "lat": first.lat,
                "lon": first.lon,
                "state": "open",
                "created_at": now,
                "updated_at": now,
                "updated_by": None,
                "note": None,
            }
        ],
        "fingerprint",
    )
    alert = session.scalars(select(Alert).where(Alert.fingerprint == fingerprint)).one()
    labels = ",".join(sorted(set(alert.labels.split(",")) | {e.label for e in evidence}))
    session.execute(
        update(Alert)
        .where(Alert.id == alert.id)
        .values(
            last_evidence_at=greatest(session, Alert.last_evidence_at, max(e.at for e in evidence)),
            labels=labels[:400],
        )
    )
    insert_ignore(
        session,
        table_of(AlertEvidence),
        [
            {
                "alert_id": alert.id,
                "evidence_key": e.key[:140],
                "event_row_id": e.event_row_id,
                "device_id": e.device_id,
                "label": e.label,
                "score": e.score,
                "at": e.at,
                "lat": e.lat,
                "lon": e.lon,
            }
            for e in evidence
        ],
        "alert_id",
    )
    insert_ignore(
        session,
        table_of(Notification),
        [
            {
                "alert_id": alert.id,
                "channel": channel,
                "status": "pending",
                "attempts": 0,
                "next_at": now,
                "lease_until": None,
                "last_error": None,
                "created_at": now,
                "sent_at": None,
            }
            for channel in channels
        ],
        "alert_id",
    )
    return int(alert.id)


def recent_with_evidence(
    session: Session, since: datetime
) -> list[tuple[Alert, list[AlertEvidence]]]:
    alerts = list(session.scalars(select(Alert).where(Alert.last_evidence_at >= since)))
    out = []
    for alert in alerts:
        out.append((alert, evidence_of(session, alert.id)))
    return out


def evidence_of(session: Session, alert_id: int) -> list[AlertEvidence]:
    q = select(AlertEvidence).where(AlertEvidence.alert_id == alert_id).order_by(AlertEvidence.at)
    return list(session.scalars(q))


def by_id(session: Session, alert_id: int) -> Alert | None:
    return session.get(Alert, alert_id)


def listing(
    session: Session,
    start: datetime,
    end: datetime,
    state: str | None = None,
    rule: str | None = None,
    site: str | None = None,
    limit: int = 100,
) -> list[Alert]:
    q = select(Alert).where(Alert.started_at >= start, Alert.started_at < end)
    if state:
        q = q.where(Alert.state == state)
    if rule:
        q = q.where(Alert.rule == rule)
    if site:
        q = q.where(Alert.site == site)
    return list(session.scalars(q.order_by(desc(Alert.started_at), desc(Alert.id)).limit(limit)))


def set_state(session: Session, alert_id: int, state: str, by: str, note: str | None) -> bool:
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}")
    result: Any = session.execute(
        update(Alert)
        .where(Alert.id == alert_id)
        .values(state=state, updated_by=by, note=note, updated_at=datetime.now(UTC))
    )
    return bool(result.rowcount)


def claim_due(session: Session, lease_s: float, limit: int) -> list[Notification]:
    """Lease due notifications (replicas skip each other's leases)."""
    now = datetime.now(UTC)
    due = (
        (Notification.status == "pending")
        & (Notification.next_at <= now)
        & or_(Notification.lease_until.is_(None), Notification.lease_until < now)
    )
    q = lock_rows(
        session,
        select(Notification).where(due).order_by(Notification.next_at).limit(limit),
        skip_locked=True,
    )
    rows = list(session.scalars(q))
    if rows:
        until = now + timedelta(seconds=lease_s)
        session.execute(
            update(Notification)
            .where(Notification.id.in_([n.id for n in rows]))
            .values(lease_until=until, attempts=Notification.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        for n in rows:
            n.attempts += 1
    session.expunge_all()
    return rows


def mark_sent(session: Session, notification_id: int) -> None:
    session.execute(
        update(Notification)
        .where(Notification.id == notification_id)
        .values(status="sent", sent_at=datetime.now(UTC), lease_until=None, last_error=None)
    )


def mark_failed(
    session: Session, notification_id: int, error: str, retry_at: datetime | None
) -> None:
    """Back to pending at ``retry_at``, or dead (None): kept, listed by the API."""
    session.execute(
        update(Notification)
        .where(Notification.id == notification_id)
        .values(
            status="pending" if retry_at is not None else "dead",
            next_at=retry_at or datetime.now(UTC),
            lease_until=None,
            last_error=error[:4000],
        )
    )


def notifications_of(session: Session, alert_id: int) -> list[Notification]:
    q = select(Notification).where(Notification.alert_id == alert_id).order_by(Notification.id)
    return list(session.scalars(q))


def dead_notifications(session: Session, limit: int) -> list[Notification]:
    q = (
        select(Notification)
        .where(Notification.status == "dead")
        .order_by(desc(Notification.id))
        .limit(limit)
    )
    return list(session.scalars(q))
