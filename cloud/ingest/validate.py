"""Validate a batch of raw MQTT messages into the rows it stores.

CPU work and clip-store writes happen here, outside any database transaction; the rows
go to ``earwitness.cloud.ingest.store`` together, in one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from earwitness.cloud.clipstore import ClipStore
from earwitness.cloud.ingest import rows
from earwitness.shared import audio
from earwitness.shared.errors import AudioError
from earwitness.shared.messages import (
    ClipMessage,
    EventMessage,
    HeartbeatMessage,
    InferenceMessage,
    MessageError,
    StatusMessage,
    decode,
)
from earwitness.shared.topics import TopicError, is_alert_topic, is_downlink, parse

SeqKey = tuple[str, str, str]  # (site, device, epoch)


@dataclass(frozen=True)
class RawMessage:
    topic: str
    payload: bytes
    received: datetime
    token: Any = None  # opaque: what the consumer needs to acknowledge it


@dataclass
class Prepared:
    inferences: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: list[StatusMessage] = field(default_factory=list)
    latest_heartbeat: dict[str, HeartbeatMessage] = field(default_factory=dict)
    seqs: set[tuple[str, str, str, int]] = field(default_factory=set)  # site, device, epoch, seq
    floors: dict[SeqKey, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lags_s: list[float] = field(default_factory=list)

    @property
    def data_rows(self) -> int:
        return len(self.inferences) + len(self.events) + len(self.clips) + len(self.heartbeats)


class Limits:
    def __init__(self, clip_max_bytes: int, dead_letter_payload_bytes: int) -> None:
        self.clip_max_bytes = clip_max_bytes
        self.dead_letter_payload_bytes = dead_letter_payload_bytes


def _seq_of_rejected(topic: str, payload: bytes) -> tuple[str, str, str, int] | None:
    """Best effort: a dead-lettered message still counts as stored for the watermark,
    otherwise one malformed message would hold a device's acknowledgements back forever."""
    try:
        t = parse(topic)
        raw = json.loads(payload)
    except (TopicError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    epoch, seq = raw.get("epoch"), raw.get("seq")
    if (
        isinstance(epoch, str)
        and epoch.isalnum()
        and 8 <= len(epoch) <= 32
        and isinstance(seq, int)
        and not isinstance(seq, bool)
        and 0 <= seq < 2**62
    ):
        return (t.site, t.device, epoch, seq)
    return None


def _touch_device(p: Prepared, site: str, device: str, when: datetime, **values: Any) -> None:
    row = p.devices.get(device)
    if row is None:
        row = {
            "id": device,
            "site": site,
            "first_seen": when,
            "last_seen": when,
            "lat": None,
            "lon": None,
            "model_id": None,
            "software_version": None,
            "online": False,
        }
        p.devices[device] = row
    row["last_seen"] = max(row["last_seen"], when)
    row["first_seen"] = min(row["first_seen"], when)
    for key, value in values.items():
        if value is not None:
            row[key] = value


def reject(p: Prepared, raw: RawMessage, error: str, limits: Limits) -> None:
    """Keep ``raw`` as a dead letter with the reason; its seq still counts as stored."""
    p.dead.append(
        {
            "topic": raw.topic[:255],
            "payload": raw.payload[: limits.dead_letter_payload_bytes],
            "payload_size": len(raw.payload),
            "error": error[:4000],
            "received_at": raw.received,
        }
    )
    rejected = _seq_of_rejected(raw.topic, raw.payload)
    if rejected:
        p.seqs.add(rejected)
    p.kinds["dead_letter"] += 1


def dead_letter(raw: RawMessage, error: str, limits: Limits) -> Prepared:
    """A batch of one dead letter: what a message the database refused becomes."""
    p = Prepared()
    reject(p, raw, error, limits)
    return p


def prepare(batch: Sequence[RawMessage], store: ClipStore, limits: Limits) -> Prepared:
    """Validate every message; CPU work and clip-store writes happen here, outside the
    database transaction."""
    p = Prepared()
    for raw in batch:
        if not raw.payload and raw.topic.endswith("/status"):
            p.kinds["retained_cleared"] += 1  # an empty retained publish clears a status
            continue
        if is_alert_topic(raw.topic):
            p.kinds["alert_ignored"] += 1  # the alert service's own notifications
            continue
        if is_downlink(raw.topic.rsplit("/", 1)[-1]):
            p.kinds["downlink_ignored"] += 1  # our own acks and the operators' config
            continue
        try:
            msg = decode(raw.topic, raw.payload)
            if isinstance(msg, ClipMessage):
                blob = msg.audio()
                if len(blob) > limits.clip_max_bytes:
                    raise MessageError(
                        f"clip audio is {len(blob)} bytes, limit {limits.clip_max_bytes}"
                    )
                try:
                    audio.decode_bytes(blob, f"clip {msg.clip_id}")
                except AudioError as exc:
                    raise MessageError(f"clip does not decode as audio: {exc.problem}") from exc
                storage_key = store.put(blob)
                p.clips.append(rows.clip_row(msg, storage_key, len(blob), raw.received))
        except MessageError as exc:
            reject(p, raw, str(exc), limits)
            continue
        p.kinds[msg.kind] += 1
        p.lags_s.append((raw.received - msg.ts).total_seconds())
        location = getattr(msg, "location", None)
        lat, lon = (location.lat, location.lon) if location else (None, None)
        if isinstance(msg, StatusMessage):
            _touch_device(
                p,
                msg.site,
                msg.device,
                raw.received,
                lat=lat,
                lon=lon,
                model_id=msg.model,
                software_version=msg.version,
            )
            p.statuses.append(msg)
            continue
        if isinstance(msg, InferenceMessage):
            p.inferences.append(rows.inference_row(msg, raw.received))
            _touch_device(
                p, msg.site, msg.device, raw.received, lat=lat, lon=lon, model_id=msg.model
            )
        elif isinstance(msg, EventMessage):
            p.events.append(rows.event_row(msg, raw.received))
            _touch_device(p, msg.site, msg.device, raw.received, lat=lat, lon=lon)
        elif isinstance(msg, ClipMessage):
            _touch_device(p, msg.site, msg.device, raw.received, model_id=msg.model)
        elif isinstance(msg, HeartbeatMessage):
            p.heartbeats.append(rows.heartbeat_row(msg, raw.received))
            _touch_device(
                p,
                msg.site,
                msg.device,
                raw.received,
                lat=lat,
                lon=lon,
                model_id=msg.model,
                software_version=msg.version,
            )
            prev = p.latest_heartbeat.get(msg.device)
            if prev is None or msg.ts >= prev.ts:
                p.latest_heartbeat[msg.device] = msg
            seq_key = (msg.site, msg.device, msg.epoch)
            p.floors[seq_key] = max(p.floors.get(seq_key, -1), msg.outbox_min_seq - 1)
        p.seqs.add((msg.site, msg.device, msg.epoch, msg.seq))
    return p
