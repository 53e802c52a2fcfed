"""Devices and their heartbeats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, desc, func, select, type_coerce, update
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import greatest, insert_ignore, rows_with_keys, upsert
from earwitness.cloud.db.models import Device, Heartbeat, table_of


def list_all(session: Session) -> list[Device]:
    return list(session.scalars(select(Device).order_by(Device.site, Device.id)))


def by_id(session: Session, device_id: str) -> Device | None:
    return session.scalars(select(Device).where(Device.id == device_id)).first()


def lock(session: Session, ids: set[str]) -> None:
    """Lock these devices' rows (those that exist) in id order, in one statement."""
    rows_with_keys(session, table_of(Device), ("id",), ("id",), [(i,) for i in ids], True)


def record_seen(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert new devices, and for known ones move ``last_seen`` forward and keep the
    newest non-null location, model and software version. Rows are written sorted by id so
    concurrent consumers lock in one order."""
    ordered = sorted(rows, key=lambda r: str(r["id"]))

    def on_conflict(new: Any, table: Any) -> dict[str, Any]:
        pinned = table.c.pinned.is_(True)
        return {
            "site": new.site,
            "last_seen": greatest(session, table.c.last_seen, new.last_seen),
            "lat": case((pinned, table.c.lat), else_=func.coalesce(new.lat, table.c.lat)),
            "lon": case((pinned, table.c.lon), else_=func.coalesce(new.lon, table.c.lon)),
            "model_id": func.coalesce(new.model_id, table.c.model_id),
            "software_version": func.coalesce(new.software_version, table.c.software_version),
        }

    upsert(session, table_of(Device), ordered, ["id"], on_conflict)


def apply_status(
    session: Session,
    device_id: str,
    online: bool,
    at: datetime,
    config_error: str | None,
    name: str | None = None,
    heads: str | None = None,
) -> None:
    """Retained status and last-will messages can arrive late or twice: only a newer
    status changes the device's state. A last will carries no name or heads: those keep
    their values. A name an operator pinned stays."""
    values: dict[str, Any] = {"online": online, "status_at": at, "config_error": config_error}
    if name is not None:
        values["name"] = case((Device.pinned.is_(True), Device.name), else_=name)
    if heads is not None:
        values["heads"] = heads[:400] or None
    session.execute(
        update(Device)
        .where(Device.id == device_id)
        .where((Device.status_at.is_(None)) | (Device.status_at <= at))
        .values(**values)
    )


def edit(
    session: Session,
    device_id: str,
    name: str | None,
    lat: float | None,
    lon: float | None,
    pinned: bool,
) -> bool:
    """An operator's name and location for a device; ``pinned`` keeps them against what
    the device reports."""
    values: dict[str, Any] = {"pinned": pinned}
    if name is not None:
        values["name"] = name
    if lat is not None and lon is not None:
        values.update(lat=lat, lon=lon)
    result: Any = session.execute(update(Device).where(Device.id == device_id).values(**values))
    return bool(result.rowcount)


def changed_since(session: Session, since: datetime, limit: int) -> list[Device]:
    """Devices seen or whose status changed after ``since``: the live map's updates."""
    q = (
        select(Device)
        .where((Device.last_seen > since) | (Device.status_at > since))
        .order_by(Device.id)
        .limit(limit)
    )
    return list(session.scalars(q))


def set_last_heartbeats(session: Session, payloads: Mapping[str, dict[str, Any]]) -> None:
    """Each device's latest heartbeat, in one UPDATE for the whole batch: a fleet's batch
    holds heartbeats of hundreds of devices, and one statement each was a round trip
    each."""
    if not payloads:
        return
    ids = sorted(payloads)  # one lock order for concurrent consumers
    newest = case(
        {device: type_coerce(payloads[device], Device.last_heartbeat.type) for device in ids},
        value=Device.id,
    )
    session.execute(update(Device).where(Device.id.in_(ids)).values(last_heartbeat=newest))


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


def names(session: Session, ids: set[str]) -> dict[str, str | None]:
    """Display names of a few devices (for feeds)."""
    if not ids:
        return {}
    q = select(Device.id, Device.name).where(Device.id.in_(sorted(ids)))
    return {str(i): n for i, n in session.execute(q).all()}
