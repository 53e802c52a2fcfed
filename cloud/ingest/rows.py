"""Validated messages -> database rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from earwitness.shared.labels import top_group
from earwitness.shared.messages import (
    ClipMessage,
    EventMessage,
    HeartbeatMessage,
    InferenceMessage,
    LabelScore,
    Location,
)


def _loc(location: Location | None) -> tuple[float | None, float | None]:
    return (location.lat, location.lon) if location else (None, None)


def _labels(top: list[LabelScore]) -> list[dict[str, Any]]:
    return [label.model_dump() for label in top]


def inference_row(msg: InferenceMessage, received: datetime) -> dict[str, Any]:
    lat, lon = _loc(msg.location)
    best = msg.top[0]
    top = top_group(msg.groups)
    group, group_score = top if top else (None, None)
    # Only a class the device decided on and scored (a `detected` name without a score
    # in `custom` is ignored rather than stored with a made-up score).
    best_custom = next((c for c in msg.detected or [] if c in (msg.custom or {})), None)
    return {
        "message_id": msg.id,
        "device_id": msg.device,
        "site": msg.site,
        "seq": msg.seq,
        "window_start": msg.window_start,
        "window_s": msg.window_s,
        "label": best.name,
        "label_index": best.index,
        "label_mid": best.mid,
        "score": best.score,
        "top_group": group,
        "top_group_score": group_score,
        "top_k": _labels(msg.top),
        "group_scores": dict(msg.groups),
        "custom": dict(msg.custom) if msg.custom else None,
        "custom_label": best_custom,
        "custom_score": (msg.custom or {}).get(best_custom) if best_custom else None,
        "dbfs": msg.dbfs,
        "leq_dbfs": msg.leq_dbfs,
        "inference_ms": msg.inference_ms,
        "model_id": msg.model,
        "lat": lat,
        "lon": lon,
        "received_at": received,
    }


def event_row(msg: EventMessage, received: datetime) -> dict[str, Any]:
    lat, lon = _loc(msg.location)
    return {
        "message_id": msg.id,
        "event_id": msg.event_id,
        "device_id": msg.device,
        "site": msg.site,
        "seq": msg.seq,
        "phase": msg.phase,
        "label": msg.label,
        "group_name": msg.group,
        "started_at": msg.started_at,
        "duration_s": msg.duration_s,
        "peak_score": msg.peak_score,
        "windows": msg.windows,
        "peak_dbfs": msg.peak_dbfs,
        "lat": lat,
        "lon": lon,
        "received_at": received,
    }


def clip_row(msg: ClipMessage, storage_key: str, size: int, received: datetime) -> dict[str, Any]:
    best = msg.edge_top[0]
    return {
        "message_id": msg.id,
        "clip_id": msg.clip_id,
        "device_id": msg.device,
        "site": msg.site,
        "seq": msg.seq,
        "reason": msg.reason,
        "event_id": msg.event_id,
        "started_at": msg.started_at,
        "window_start": msg.window_start,
        "duration_s": msg.duration_s,
        "sample_rate": msg.sample_rate,
        "sha256": msg.sha256,
        "size_bytes": size,
        "storage_key": storage_key,
        "edge_label": best.name,
        "edge_label_index": best.index,
        "edge_score": best.score,
        "edge_top_k": _labels(msg.edge_top),
        "edge_groups": dict(msg.edge_groups),
        "model_id": msg.model,
        "received_at": received,
        "status": "pending",
        "attempts": 0,
    }


def heartbeat_row(msg: HeartbeatMessage, received: datetime) -> dict[str, Any]:
    payload = msg.model_dump(mode="json", exclude={"v", "id", "site", "device", "kind"})
    return {
        "message_id": msg.id,
        "device_id": msg.device,
        "seq": msg.seq,
        "ts": msg.ts,
        "uptime_s": msg.uptime_s,
        "windows_dropped": msg.windows_dropped,
        "outbox_rows": msg.outbox_rows,
        "outbox_dropped": msg.outbox_dropped,
        "clips_blocked_privacy": msg.clips_blocked_privacy,
        "cpu_temp_c": msg.cpu_temp_c,
        "payload": payload,
        "received_at": received,
    }
