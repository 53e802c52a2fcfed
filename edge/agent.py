"""`earwitness edge`: capture -> frontend -> YAMNet -> events, clips, privacy -> outbox -> MQTT.

Threads: capture (never blocks), inference (frontend, model, detection, clips; writes
the outbox), publisher (MQTT), health server. The main thread sends heartbeats and waits
for a signal.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from earwitness.edge.capture import AudioRing, CaptureBuffer
from earwitness.edge.clips import ClipSampler, PendingClips, ReadyClip, SpeechTrack
from earwitness.edge.config import EdgeSettings, RuntimeSettings
from earwitness.edge.events import EventDetector, EventUpdate
from earwitness.edge.heads_remote import HeadStore
from earwitness.edge.levels import RunningLeq, dbfs
from earwitness.edge.outbox import Outbox
from earwitness.edge.privacy import PrivacyFilter
from earwitness.edge.publisher import Publisher
from earwitness.edge.remote_config import RemoteConfigGate
from earwitness.edge.sources import AudioSource, open_source
from earwitness.shared import __version__, topics
from earwitness.shared.audio import SAMPLE_RATE
from earwitness.shared.blas import limit_blas_threads
from earwitness.shared.errors import ConfigError
from earwitness.shared.frontend import (
    PATCH_HOP_SAMPLES,
    PATCH_SAMPLES,
    PATCH_SECONDS,
    StreamingFrontend,
)
from earwitness.shared.heads import Head, head_features, load_heads
from earwitness.shared.labels import ClassMap, LabelGroups
from earwitness.shared.messages import (
    ClipMessage,
    DeviceState,
    EventMessage,
    HeartbeatMessage,
    InferenceMessage,
    LabelScore,
    Location,
    StatusMessage,
    encode,
    message_id,
)
from earwitness.shared.metrics import HealthServer, Registry
from earwitness.shared.model_registry import CLASS_MAP, locate
from earwitness.shared.runner import WindowResult, YamnetModel
from earwitness.shared.service import Health, Service

log = logging.getLogger(__name__)

RING_SECONDS = 30.0  # audio kept for clips: pre-roll + window + post-roll + inference lag
STALL_S = 15.0  # no window for this long while capture runs: unhealthy
FIRST_HEARTBEAT_S = 5.0  # the cloud sees a new device's counters this soon after start
HEARTBEAT_JITTER = 0.1
"""Each heartbeat interval is drawn within +-10 % of ``heartbeat_s``: the devices of a site
that power on together otherwise send their heartbeats in the same second for as long as
they run, and at fleet scale each such burst showed as a spike in ingest's latency every
period (bench/fleet.py, docs/benchmarks.md)."""
OUTBOX_EXPIRY_EVERY_S = 60.0  # max_age_s is hours or days: a minute late is nothing
TICK_S = 0.2  # how often the periodic work looks at the clock


def cpu_temperature() -> float | None:
    """Jetson and Raspberry Pi expose it here; elsewhere it may not exist."""
    for zone in sorted(Path("/sys/class/thermal").glob("thermal_zone*/temp")):
        try:
            return int(zone.read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return None


class _Runtime:
    """Everything derived from RuntimeSettings; replaced whole on a remote config change."""

    def __init__(
        self,
        settings: RuntimeSettings,
        class_map: ClassMap,
        groups: LabelGroups,
        heads: list[Head],
    ) -> None:
        self.settings = settings
        self.heads = heads
        self.custom_thresholds = {c: h.thresholds[c] for h in heads for c in h.classes}
        self.detector = EventDetector(settings.detection, class_map, groups, self.custom_thresholds)
        self.sampler = ClipSampler(settings.clips)
        self.privacy = PrivacyFilter(settings.privacy)


class EdgeAgent(Service):
    """The device agent. It owns its periodic work: heartbeats and outbox expiry."""

    def __init__(self, cfg: EdgeSettings, source: AudioSource | None = None) -> None:
        self.cfg = cfg
        self._last_features: tuple[int, np.ndarray] | None = None  # (position, head input)
        limit_blas_threads(cfg.model.blas_threads)
        model_dir = cfg.model.dir
        # Embeddings (what heads read) when heads run now or may arrive by remote config.
        embeddings = bool(cfg.model.heads) or bool(cfg.remote_config.public_keys)
        self.model = YamnetModel.load(
            cfg.model.name, model_dir, threads=cfg.model.threads, embeddings=embeddings
        )
        self.local_heads = load_heads(cfg.model.heads, self.model.model_id)
        self._head_store = HeadStore(cfg.outbox.path.with_name(cfg.outbox.path.name + ".heads"))
        self.class_map = ClassMap.load(locate(CLASS_MAP, model_dir))
        self.groups = LabelGroups.load(self.class_map, cfg.model.groups_file)
        self._runtime = self._new_runtime(cfg.runtime)
        self._runtime_lock = threading.Lock()
        self.config_error: str | None = None
        self._config_gate = RemoteConfigGate(
            cfg.remote_config,
            cfg.device.site,
            cfg.device.id,
            cfg.runtime,
            cfg.outbox.path.with_name(cfg.outbox.path.name + ".config"),
        )
        self._applied_config: bytes | None = None  # the remote config in force, as received
        remembered = self._config_gate.recall()
        if remembered is not None:  # the cloud's last config survives a restart
            try:
                self._runtime = self._new_runtime(remembered[1])
                self._applied_config = remembered[0]
            except ConfigError as exc:  # e.g. a head URL unreachable and not cached
                self.config_error = f"stored remote config not applied: {exc}"[:2000]
                log.warning("%s", self.config_error)
        self.source = source or open_source(cfg.source)
        self.buffer = CaptureBuffer(
            int(cfg.max_backlog_s * SAMPLE_RATE),
            backpressure=not getattr(self.source, "live", True),
        )
        self.ring = AudioRing(int(RING_SECONDS * SAMPLE_RATE))
        self.speech = SpeechTrack(int(RING_SECONDS * SAMPLE_RATE))
        self._pending = PendingClips(self._runtime.settings.clips, self._runtime.privacy)
        self.leq = RunningLeq()
        self.outbox = Outbox(cfg.outbox.path, cfg.outbox.max_bytes, cfg.outbox.max_age_s)
        d = cfg.device
        self.location = (
            Location(lat=d.lat, lon=d.lon) if d.lat is not None and d.lon is not None else None
        )
        self.publisher = Publisher(
            cfg.mqtt,
            self.outbox,
            d.site,
            d.id,
            self.status_message,
            cfg.outbox.ack_timeout_s,
            cfg.outbox.drain_rate,
            self.apply_remote_config,
        )
        self.metrics = Registry("earwitness_edge")
        self._describe_metrics()
        self._stop = threading.Event()
        self.capture_done = threading.Event()
        self.inference_done = threading.Event()
        self._started = time.monotonic()
        self._t0 = datetime.now(UTC)
        self._last_window = time.monotonic()
        self.windows = 0
        self.gap_restarts = 0
        self.events_sent = 0
        self.capture_error: str | None = None
        self._capture = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
        self._inference = threading.Thread(
            target=self._inference_loop, name="inference", daemon=True
        )
        self._ticks = threading.Thread(target=self._tick_loop, name="ticks", daemon=True)
        # Set once the heartbeat with a finished source's final counters is in the outbox.
        self.final_heartbeat = threading.Event()
        self._health: HealthServer | None = None
        if cfg.health.port:
            self._health = HealthServer(cfg.health.host, cfg.health.port, self.metrics, self.health)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._t0 = datetime.now(UTC) - timedelta(seconds=self._replay_lead_s())
        self._capture.start()
        self._inference.start()
        self.publisher.start()
        self._ticks.start()
        if self._health:
            self._health.start()
        log.info(
            "edge agent %s/%s started: source %s, model %s, outbox epoch %s",
            self.cfg.device.site,
            self.cfg.device.id,
            self.source.name,
            self.model.model_id,
            self.outbox.epoch,
        )

    def stop(self, timeout: float = 2.0) -> None:
        """Stop capture, finish the windows in hand, flush the outbox for up to ``timeout``
        seconds, disconnect. Bounded so SIGTERM leads to exit within 5 s."""
        self._stop.set()
        if self._ticks.is_alive():
            self._ticks.join(1.0)
        self.buffer.close()
        self._capture.join(1.0)
        self._inference.join(1.5)
        self.publisher.stop(timeout)
        if self._health:
            self._health.stop()
        self.outbox.close()

    @property
    def finished(self) -> bool:
        """The source ended and every window was processed."""
        return self.inference_done.is_set()

    def drained(self) -> bool:
        return self.outbox.stats().rows == 0

    # -- threads ------------------------------------------------------------------------
    def _capture_loop(self) -> None:
        try:
            for chunk in self.source.chunks(self._stop):
                self.buffer.put(chunk)
        except Exception as exc:  # a dead microphone must be visible, not silent
            self.capture_error = f"{type(exc).__name__}: {exc}"
            log.exception("capture failed")
        finally:
            self.capture_done.set()
            self.buffer.close()

    def _inference_loop(self) -> None:
        frontend = StreamingFrontend()
        base: int | None = None
        expected = 0
        try:
            while True:
                chunk = self.buffer.get(0.2)
                if chunk is None:
                    if self.buffer.finished or self._stop.is_set():
                        break
                    continue
                if base is None or chunk.start != expected:
                    if base is not None:
                        # After dropped audio the frontend starts afresh; its first hop
                        # yields no window, one more lost to the gap.
                        self.gap_restarts += 1
                    frontend = StreamingFrontend()
                    base = chunk.start
                self.ring.write(chunk.start, chunk.samples)
                expected = chunk.start + chunk.samples.size
                for patch in frontend.push(chunk.samples):
                    self._process(base + patch.start_sample, patch.features)
            if base is not None and not self._stop.is_set():
                for patch in frontend.flush():
                    self._process(base + patch.start_sample, patch.features)
            self._finish()
        except Exception:
            log.exception("inference failed")
            raise
        finally:
            self.inference_done.set()

    def _new_runtime(self, settings: RuntimeSettings) -> _Runtime:
        """Raises ConfigError (with the reason) when the settings cannot run here."""
        heads = self.local_heads
        if settings.heads is not None:
            heads = self._head_store.resolve(settings.heads, self.model.model_id)
            if heads and not self.model.embeddings:
                raise ConfigError(
                    "remote config ships heads but the agent started without embeddings"
                )
        return _Runtime(settings, self.class_map, self.groups, heads)

    @property
    def heads(self) -> list[Head]:
        return self._runtime.heads

    @property
    def head_ids(self) -> list[str] | None:
        return [h.head_id for h in self.heads] or None

    def _custom_scores(self, rt: _Runtime, result: WindowResult, position: int) -> dict[str, float]:
        if not rt.heads or result.embedding is None:
            return {}
        features = head_features(result.embedding, result.scores)
        # A delta head compares with the window one hop earlier; after a gap (dropped
        # audio, a new replay file) there is none, and the first window reads no change.
        last = self._last_features
        previous = last[1] if last and last[0] == position - PATCH_HOP_SAMPLES else None
        self._last_features = (position, features)
        scores: dict[str, float] = {}
        for head in rt.heads:
            for c, v in zip(head.classes, head.scores(features, previous)[0], strict=True):
                scores[c] = round(float(v), 4)
        return scores

    def _replay_lead_s(self) -> float:
        """How far back the stream's clock starts. A file replayed faster than real time
        would otherwise stamp its windows in the future (an hour replayed in ten seconds
        ends an hour ahead); started that much in the past, every window starts before it
        is processed and the spacing between windows stays true. Live sources: 0."""
        if getattr(self.source, "live", True):
            return 0.0
        duration = getattr(self.source, "duration_s", None)
        return float(duration) if duration else 0.0

    # -- per window -----------------------------------------------------------------------
    def _time_at(self, position: int) -> datetime:
        return self._t0 + timedelta(seconds=position / SAMPLE_RATE)

    def _position_at(self, when: datetime) -> int:
        return int((when - self._t0).total_seconds() * SAMPLE_RATE)

    def _process(self, position: int, features: np.ndarray) -> None:
        result = self.model.run_patch(features)
        with self._runtime_lock:
            rt = self._runtime
            window_start = self._time_at(position)
            level = dbfs(self.ring.read(position, position + PATCH_SAMPLES))
            leq = self.leq.add(level)
            group_scores = self.groups.scores(result.scores)
            custom = self._custom_scores(rt, result, position)
            self.speech.add(position, position + PATCH_SAMPLES, group_scores.get("speech", 0.0))
            updates = rt.detector.update(
                window_start, PATCH_SECONDS, result.scores, group_scores, level, custom
            )
            for update in updates:
                self._emit_event(update)
            self._maybe_publish_inference(
                rt, result, window_start, group_scores, level, leq, custom
            )
            started = [u for u in updates if u.phase == "start"]
            top = float(result.scores.max())
            for reason in rt.sampler.reasons(top, bool(started)):
                if reason == "event":
                    span_start = self._position_at(started[0].first_window_start)
                    event_id: str | None = started[0].event_id
                else:
                    span_start, event_id = position, None
                self._pending.add(
                    rt.sampler.request(
                        reason,
                        event_id,
                        span_start,
                        position + PATCH_SAMPLES,
                        position,
                        (result, window_start, group_scores),
                    )
                )
            self._send_clips(
                self._pending.resolve(self.ring, position + PATCH_SAMPLES, self.speech)
            )
            self.windows += 1
            self._last_window = time.monotonic()
            self.metrics.inc("windows_total")
            self.metrics.set("inference_ms", result.inference_ms)

    def _finish(self) -> None:
        with self._runtime_lock:
            for update in self._runtime.detector.close():
                self._emit_event(update)
            self._send_clips(
                self._pending.resolve(self.ring, self.ring.end, self.speech, final=True)
            )

    def _labels(self, scores: np.ndarray, k: int) -> list[LabelScore]:
        return [
            LabelScore(index=c.index, mid=c.mid, name=c.name, score=round(min(1.0, s), 4))
            for c, s in self.class_map.top_k(scores, k)
        ]

    def _envelope(self, seq: int) -> dict[str, Any]:
        d = self.cfg.device
        return {
            "id": message_id(d.id, self.outbox.epoch, seq),
            "site": d.site,
            "device": d.id,
            "ts": datetime.now(UTC),
            "epoch": self.outbox.epoch,
            "seq": seq,
        }

    def _topic(self, kind: topics.Kind) -> str:
        return topics.topic(self.cfg.device.site, self.cfg.device.id, kind)

    def _maybe_publish_inference(
        self,
        rt: _Runtime,
        result: WindowResult,
        window_start: datetime,
        group_scores: dict[str, float],
        level: float,
        leq: float,
        custom: dict[str, float],
    ) -> None:
        policy = rt.settings.publish
        if policy.inference == "none":
            return
        if policy.inference == "every_n" and self.windows % policy.every_n != 0:
            return
        if policy.inference == "interest" and not any(
            rt.detector.score_of(r, result.scores, group_scores, custom) >= r.threshold
            for r in rt.detector.labels_of_interest()
        ):
            return
        top = self._labels(result.scores, policy.top_k)
        detected = sorted(
            (c for c, v in custom.items() if v >= rt.custom_thresholds[c]),
            key=lambda c: -custom[c],
        )

        def build(seq: int) -> bytes:
            return encode(
                InferenceMessage(
                    **self._envelope(seq),
                    window_start=window_start,
                    window_s=PATCH_SECONDS,
                    top=top,
                    groups={k: round(min(1.0, v), 4) for k, v in group_scores.items()},
                    custom=custom or None,
                    detected=detected or None,
                    dbfs=round(level, 2),
                    leq_dbfs=round(leq, 2),
                    inference_ms=round(result.inference_ms, 3),
                    model=self.model.model_id,
                    location=self.location,
                )
            )

        self.outbox.append("inference", self._topic(topics.Kind.INFERENCE), build)

    def _emit_event(self, u: EventUpdate) -> None:
        def build(seq: int) -> bytes:
            return encode(
                EventMessage(
                    **self._envelope(seq),
                    event_id=u.event_id,
                    phase=u.phase,
                    label=u.label,
                    group=u.group,
                    started_at=u.started_at,
                    duration_s=u.duration_s,
                    peak_score=min(1.0, u.peak_score),
                    windows=u.windows,
                    peak_dbfs=u.peak_dbfs,
                    location=self.location,
                )
            )

        self.outbox.append("event", self._topic(topics.Kind.EVENT), build)
        self.events_sent += 1
        self.metrics.inc("events_total", phase=u.phase)

    def _send_clips(self, ready: list[ReadyClip]) -> None:
        for clip in ready:
            result, window_start, group_scores = clip.request.context
            digest = hashlib.sha256(clip.flac).hexdigest()
            encoded = base64.b64encode(clip.flac).decode()
            top = self._labels(result.scores, 5)

            def build(
                seq: int,
                clip: ReadyClip = clip,
                top: list[LabelScore] = top,
                window_start: datetime = window_start,
                groups: Any = group_scores,
                digest: str = digest,
                encoded: str = encoded,
            ) -> bytes:
                return encode(
                    ClipMessage(
                        **self._envelope(seq),
                        clip_id=clip.request.clip_id,
                        reason=clip.request.reason,
                        event_id=clip.request.event_id,
                        started_at=self._time_at(clip.start),
                        duration_s=round(clip.samples / SAMPLE_RATE, 3),
                        sample_rate=SAMPLE_RATE,
                        sha256=digest,
                        audio_b64=encoded,
                        window_start=window_start,
                        edge_top=top,
                        edge_groups={k: round(min(1.0, v), 4) for k, v in groups.items()},
                        model=self.model.model_id,
                    )
                )

            self.outbox.append("clip", self._topic(topics.Kind.CLIP), build)
            self.metrics.inc("clips_sent_total")

    # -- status, heartbeat, config ------------------------------------------------------------
    def status_message(self, state: DeviceState) -> StatusMessage:
        return StatusMessage(
            id=uuid.uuid4().hex,
            site=self.cfg.device.site,
            device=self.cfg.device.id,
            ts=datetime.now(UTC),
            state=state,
            name=self.cfg.device.name,
            version=__version__,
            model=self.model.model_id,
            location=self.location,
            config_error=self.config_error,
            config_version=self._runtime.settings.version,
            acks_rejected=self.outbox.acks_rejected,
            heads=self.head_ids,
        )

    def counters(self) -> dict[str, Any]:
        privacy = self._runtime.privacy
        stats = self.outbox.stats()
        return {
            "windows_processed": self.windows,
            "windows_dropped": self.buffer.dropped_windows + self.gap_restarts,
            "queue_depth": self.buffer.depth_samples // (SAMPLE_RATE * 48 // 100),
            "outbox_rows": stats.rows,
            "outbox_bytes": stats.bytes,
            "outbox_dropped": stats.dropped,
            "outbox_min_seq": stats.min_seq,
            "clips_sent": self._pending.sent,
            "clips_blocked_privacy": privacy.blocked,
            "clips_too_large": self._pending.too_large,
            "acks_rejected": self.outbox.acks_rejected,
            "events_sent": self.events_sent,
            "mqtt_connected": self.publisher.connected,
        }

    def send_heartbeat(self) -> None:
        c = self.counters()
        temp = cpu_temperature()

        def build(seq: int) -> bytes:
            return encode(
                HeartbeatMessage(
                    **self._envelope(seq),
                    uptime_s=round(time.monotonic() - self._started, 1),
                    version=__version__,
                    model=self.model.model_id,
                    heads=self.head_ids,
                    queue_depth=c["queue_depth"],
                    windows_processed=c["windows_processed"],
                    windows_dropped=c["windows_dropped"],
                    outbox_rows=c["outbox_rows"],
                    outbox_bytes=c["outbox_bytes"],
                    outbox_dropped=c["outbox_dropped"],
                    outbox_min_seq=c["outbox_min_seq"],
                    clips_sent=c["clips_sent"],
                    clips_blocked_privacy=c["clips_blocked_privacy"],
                    clips_too_large=c["clips_too_large"],
                    acks_rejected=c["acks_rejected"],
                    leq_dbfs=round(self.leq.value, 2),
                    cpu_temp_c=temp,
                    location=self.location,
                )
            )

        self.outbox.append("heartbeat", self._topic(topics.Kind.HEARTBEAT), build)

    def apply_remote_config(self, payload: bytes) -> None:
        """Verify and swap in a new runtime config; on error keep the old one and say why
        on the status topic (see edge/remote_config.py for what is accepted)."""
        if payload == self._applied_config:
            return  # the retained config again, after a reconnect
        try:
            settings = self._config_gate.check(payload, self._runtime.settings.version)
            runtime = self._new_runtime(settings)
        except ConfigError as exc:
            self.config_error = str(exc)[:2000]
            self.metrics.inc("config_rejected_total")
            log.error("remote config rejected: %s", exc)
        else:
            with self._runtime_lock:
                runtime.privacy.blocked = self._runtime.privacy.blocked  # counters carry over
                self._runtime = runtime
                self._pending.privacy = runtime.privacy
                self._pending.settings = settings.clips
            self._applied_config = payload
            self._config_gate.remember(payload)
            self.config_error = None
            self.metrics.inc("config_applied_total")
            log.info("remote config version %d applied", settings.version)
        if self.publisher.connected:
            self.publisher.publish_status("online")

    # -- health -----------------------------------------------------------------------------
    def _describe_metrics(self) -> None:
        m = self.metrics
        m.describe("windows_total", "counter", "analysis windows processed")
        m.describe("events_total", "counter", "event messages, by phase")
        m.describe("clips_sent_total", "counter", "clips queued for the cloud")
        m.describe("inference_ms", "gauge", "model time of the last window")
        for name, help_text in (
            ("windows_dropped", "windows dropped because inference fell behind"),
            ("outbox_rows", "messages waiting for the cloud's acknowledgement"),
            ("outbox_bytes", "bytes in the outbox"),
            ("outbox_dropped", "messages dropped because the outbox was full or too old"),
            ("clips_blocked_privacy", "clips withheld because they contained speech"),
            ("clips_too_large", "clips withheld because they encoded above clips.max_bytes"),
            ("acks_rejected", "acks ignored: above what was sent or for unsent rows (forged?)"),
            ("mqtt_connected", "1 while connected to the broker"),
        ):
            m.describe(name, "gauge", help_text)
            m.gauge_callback(name, self._counter_reader(name))
        m.gauge_callback("leq_dbfs", lambda: self.leq.value)

    def _counter_reader(self, name: str) -> Callable[[], float]:
        return lambda: float(self.counters()[name])

    def _tick_loop(self) -> None:
        """Heartbeats every ``heartbeat_s`` (the first soon after start, one more when a
        finite source has been processed) and outbox expiry every minute."""
        hb = self.cfg.heartbeat_s
        now = time.monotonic()
        next_heartbeat = now + min(FIRST_HEARTBEAT_S, hb)
        next_expiry = now + OUTBOX_EXPIRY_EVERY_S
        final_sent = False
        while not self._stop.wait(TICK_S):
            now = time.monotonic()
            if self.finished and not final_sent:
                final_sent = True
                next_heartbeat = now  # the final counters, once the source is done
            if now >= next_heartbeat:
                self.send_heartbeat()
                next_heartbeat = now + hb * random.uniform(
                    1 - HEARTBEAT_JITTER, 1 + HEARTBEAT_JITTER
                )
                if final_sent:
                    self.final_heartbeat.set()
            if now >= next_expiry:
                self.outbox.drop_expired()
                next_expiry = now + OUTBOX_EXPIRY_EVERY_S

    def health(self) -> Health:
        stalled = not self.capture_done.is_set() and time.monotonic() - self._last_window > STALL_S
        ok = (self.capture_error is None and not stalled and self._inference.is_alive()) or (
            self.finished and self.capture_error is None
        )
        return Health(
            ok,
            {
                **self.counters(),
                "capture_error": self.capture_error,
                "stalled": stalled,
                "config_error": self.config_error,
            },
        )
