"""Devices and their heartbeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import desc, func, select, update
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import greatest, insert_ignore, upsert
from earwitness.cloud.db.models import Device, Heartbeat, table_of


def list_all(session: Session) -> list[Device]:
    return list(session.scalars(select(Device).order_by(Device.site, Device.id)))


def by_id(session: Session, device_id: str) -> Device | None:
    return session.scalars(select(Device).where(Device.id == device_id)).first()


def record_seen(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert new devices, and for known ones move ``last_seen`` forward and keep the
    newest non-null location, model and software version. Rows are written sorted by id so
    concurrent consumers lock in one order."""
    ordered = sorted(rows, key=lambda r: str(r["id"]))

    def on_conflict(new: Any, table: Any) -> dict[str, Any]:
        return {
            "site": new.site,
            "last_seen": greatest(session, table.c.last_seen, new.last_seen),
            "lat": func.coalesce(new.lat, table.c.lat),
            "lon": func.coalesce(new.lon, table.c.lon),
            "model_id": func.coalesce(new.model_id, table.c.model_id),
            "software_version": func.coalesce(new.software_version, table.c.software_version),
        }

    upsert(session, table_of(Device), ordered, ["id"], on_conflict)


def apply_status(
    session: Session, device_id: str, online: bool, at: datetime, config_error: str | None
) -> None:
    """Retained status and last-will messages can arrive late or twice: only a newer
    status changes the device's state."""
    session.execute(
        update(Device)
        .where(Device.id == device_id)
        .where((Device.status_at.is_(None)) | (Device.status_at <= at))
        .values(online=online, status_at=at, config_error=config_error)
    )


def set_last_heartbeat(session: Session, device_id: str, payload: dict[str, Any]) -> None:
    session.execute(update(Device).where(Device.id == device_id).values(last_heartbeat=payload))


def add_heartbeats(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    return insert_ignore(session, table_of(Heartbeat), rows, "message_id")


def heartbeats(session: Session, device_id: str, limit: int) -> list[Heartbeat]:
    q = (
        select(Heartbeat)
        .where(Heartbeat.device_id == device_id)
        .order_by(desc(Heartbeat.ts))
        .limit(limit)
    )
    return list(session.scalars(q))
