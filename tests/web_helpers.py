"""Seed a database through the real ingest writer and serve the real app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.settings import CloudSettings
from earwitness.cloud.web.app import create_app
from earwitness.shared.topics import Kind
from tests.factories import SPEECH, Device, LabelScore, wire

DOG = LabelScore(index=69, mid="/m/0bt9lr", name="Dog", score=0.7)
LOCATIONS = {"vienna": (48.2082, 16.3738), "berlin": (52.52, 13.405), "paris": (48.8566, 2.3522)}


def seed(
    engine: Engine, clip_dir: Path, per_device: int = 60, t0: datetime | None = None
) -> dict[str, Device]:
    """Three devices, ``per_device`` windows each (siren / dog / speech), one clip each,
    an event each and a status each."""
    t0 = t0 or datetime.now(UTC) - timedelta(hours=1)
    store = FileClipStore(clip_dir)
    devices = {}
    batch: list[RawMessage] = []
    now = datetime.now(UTC)
    for i, (name, loc) in enumerate(LOCATIONS.items()):
        dev = Device("site1", name, location=loc, t0=t0 + timedelta(seconds=i))
        devices[name] = dev
        for seq in range(per_device):
            if name == "vienna":
                msg = dev.inference(seq)  # siren: alarm 0.8
            elif name == "berlin":
                msg = dev.inference(seq, DOG, {"animal": 0.7, "alarm": 0.0})
            else:
                msg = dev.inference(seq, SPEECH, {"speech": 0.9})
            batch.append(RawMessage(dev.topic(Kind.INFERENCE), wire(msg), now))
        batch.append(RawMessage(dev.topic(Kind.EVENT), wire(dev.event(per_device, "end")), now))
        batch.append(RawMessage(dev.topic(Kind.CLIP), wire(dev.clip(per_device + 1)), now))
        batch.append(
            RawMessage(dev.topic(Kind.HEARTBEAT), wire(dev.heartbeat(per_device + 2)), now)
        )
        batch.append(
            RawMessage(
                dev.topic(Kind.STATUS),
                wire(dev.status("offline" if name == "paris" else "online", now)),
                now,
            )
        )
    BatchStore(engine).store(prepare(batch, store, Limits(512 * 1024, 4096)))
    return devices


def web_settings(db_url: str, clip_dir: Path, auth: bool = True) -> CloudSettings:
    return CloudSettings(
        database_url=db_url,
        clips={"url": str(clip_dir)},
        web={"auth": auth, "max_request_bytes": 4096},
    )


def client(settings: CloudSettings, engine: Engine) -> TestClient:
    return TestClient(create_app(settings, engine, FileClipStore(Path(settings.clips.url))))


def seed_alert(engine: Engine, clip_dir: Path, devices: dict[str, Device]) -> int:
    """A distress alert on vienna's seeded event, with a clip of that event."""
    from sqlalchemy import select

    from earwitness.cloud.db.engine import transaction
    from earwitness.cloud.db.models import Event
    from earwitness.cloud.db.repo import alerts

    vienna = devices["vienna"]
    event_id = f"ev-{vienna.device}-1"
    raw = RawMessage(
        vienna.topic(Kind.CLIP), wire(vienna.clip(900, event_id=event_id)), datetime.now(UTC)
    )
    BatchStore(engine).store(prepare([raw], FileClipStore(clip_dir), Limits(512 * 1024, 4096)))
    with transaction(engine) as session:
        ev = session.scalars(select(Event).where(Event.device_id == vienna.device)).first()
        assert ev is not None
        return alerts.record(
            session,
            f"distress:{vienna.device}/{event_id}",
            "distress",
            "critical",
            vienna.site,
            [
                alerts.EvidenceRow(
                    f"{vienna.device}/{event_id}",
                    ev.id,
                    vienna.device,
                    "glass_break",
                    0.93,
                    ev.started_at,
                    ev.lat,
                    ev.lon,
                ),
                alerts.EvidenceRow(
                    f"{vienna.device}/scream-1",
                    ev.id,
                    vienna.device,
                    "scream",
                    0.88,
                    ev.started_at + timedelta(seconds=3),
                    ev.lat,
                    ev.lon,
                ),
            ],
            ["webhook:ops"],
        )
