"""Build valid device messages for tests, the way the edge agent does."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np

from earwitness.shared import audio
from earwitness.shared.messages import (
    ClipMessage,
    EventMessage,
    HeartbeatMessage,
    InferenceMessage,
    LabelScore,
    Location,
    StatusMessage,
    encode,
    message_id,
)
from earwitness.shared.topics import Kind, topic

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
SPEECH = LabelScore(index=0, mid="/m/09x0r", name="Speech", score=0.9)
SIREN = LabelScore(index=390, mid="/m/03kmc9", name="Siren", score=0.8)


class Device:
    def __init__(
        self,
        site: str,
        device: str,
        epoch: str = "epoch0001",
        location: tuple[float, float] | None = (48.2082, 16.3738),
        t0: datetime = T0,
    ) -> None:
        self.site, self.device, self.epoch = site, device, epoch
        self.t0 = t0
        self.location = Location(lat=location[0], lon=location[1]) if location else None

    def _base(self, seq: int) -> dict[str, object]:
        return {
            "id": message_id(self.device, self.epoch, seq),
            "site": self.site,
            "device": self.device,
            "ts": self.t0 + timedelta(seconds=0.48 * seq),
            "epoch": self.epoch,
            "seq": seq,
        }

    def topic(self, kind: Kind) -> str:
        return topic(self.site, self.device, kind)

    def inference(
        self, seq: int, label: LabelScore = SIREN, groups: dict[str, float] | None = None
    ) -> InferenceMessage:
        return InferenceMessage(
            **self._base(seq),  # type: ignore[arg-type]
            window_start=self.t0 + timedelta(seconds=0.48 * seq),
            window_s=0.96,
            top=[label],
            groups=groups
            if groups is not None
            else {"alarm": 0.8 if label is SIREN else 0.0, "speech": 0.0},
            dbfs=-23.5,
            inference_ms=0.6,
            model="yamnet-int8@0a266465c467",
            location=self.location,
        )

    def event(self, seq: int, phase: str = "start") -> EventMessage:
        return EventMessage(
            **self._base(seq),  # type: ignore[arg-type]
            event_id=f"ev-{self.device}-1",
            phase=phase,  # type: ignore[arg-type]
            label="alarm",
            group="alarm",
            started_at=self.t0,
            duration_s=1.44,
            peak_score=0.85,
            windows=3,
            peak_dbfs=-12.0,
            location=self.location,
        )

    def clip(self, seq: int, flac: bytes | None = None, event_id: str | None = None) -> ClipMessage:
        if flac is None:
            t = np.arange(16000 * 2) / 16000
            flac = audio.encode_flac((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32))
        return ClipMessage(
            **self._base(seq),  # type: ignore[arg-type]
            clip_id=f"clip-{self.device}-{seq}",
            reason="event" if event_id else "sampled",
            event_id=event_id,
            started_at=self.t0,
            duration_s=2.0,
            sample_rate=16000,
            sha256=hashlib.sha256(flac).hexdigest(),
            audio_b64=base64.b64encode(flac).decode(),
            window_start=self.t0,
            edge_top=[SIREN],
            edge_groups={"alarm": 0.8},
            model="yamnet-int8@0a266465c467",
        )

    def heartbeat(self, seq: int, outbox_min_seq: int = 0) -> HeartbeatMessage:
        return HeartbeatMessage(
            **self._base(seq),  # type: ignore[arg-type]
            uptime_s=10.0,
            version="0.1.0",
            model="yamnet-int8@0a266465c467",
            queue_depth=0,
            windows_processed=seq,
            windows_dropped=0,
            outbox_rows=3,
            outbox_bytes=1000,
            outbox_dropped=0,
            outbox_min_seq=outbox_min_seq,
            clips_sent=0,
            clips_blocked_privacy=0,
            location=self.location,
        )

    def status(self, state: str = "online", ts: datetime = T0) -> StatusMessage:
        return StatusMessage(
            id=f"status-{self.device}-{int(ts.timestamp() * 1000)}",
            site=self.site,
            device=self.device,
            ts=ts,
            state=state,  # type: ignore[arg-type]
            version="0.1.0",
            location=self.location,
        )


def wire(msg: object) -> bytes:
    return encode(msg)  # type: ignore[arg-type]
