"""Which windows get an audio clip for the cloud's second opinion, and cutting it.

A clip request waits until the post-roll audio has arrived *and* every window overlapping
the clip has been scored, so the privacy decision sees the whole clip.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from earwitness.edge.capture import AudioRing
from earwitness.edge.config import ClipSettings
from earwitness.edge.privacy import PrivacyFilter
from earwitness.shared import audio
from earwitness.shared.audio import SAMPLE_RATE
from earwitness.shared.messages import ClipReason


@dataclass(frozen=True)
class ClipRequest:
    clip_id: str
    reason: ClipReason
    event_id: str | None
    start: int  # absolute sample positions [start, stop)
    stop: int
    window_pos: int  # the analysis window this clip is for
    context: Any  # what the caller needs to build the message (window result)


@dataclass(frozen=True)
class ReadyClip:
    request: ClipRequest
    flac: bytes
    start: int
    samples: int


log = logging.getLogger(__name__)


class ClipSampler:
    def __init__(self, settings: ClipSettings) -> None:
        self.settings = settings
        self.window_count = 0
        self._low_conf_times: deque[float] = deque()

    def reasons(self, top_score: float, event_started: bool) -> list[ClipReason]:
        s = self.settings
        self.window_count += 1
        if not s.enabled:
            return []
        reasons: list[ClipReason] = []
        if event_started and s.events:
            reasons.append("event")
        if s.every_n and self.window_count % s.every_n == 0:
            reasons.append("sampled")
        if s.low_confidence is not None and not reasons:
            lo, hi = s.low_confidence
            if lo <= top_score < hi and self._low_conf_budget():
                reasons.append("low_confidence")
        return reasons[:1]  # one clip per window is enough

    def _low_conf_budget(self) -> bool:
        now = time.monotonic()
        while self._low_conf_times and now - self._low_conf_times[0] > 3600:
            self._low_conf_times.popleft()
        if len(self._low_conf_times) >= self.settings.low_confidence_max_per_hour:
            return False
        self._low_conf_times.append(now)
        return True

    def request(
        self,
        reason: ClipReason,
        event_id: str | None,
        span_start: int,
        span_stop: int,
        window_pos: int,
        context: object,
    ) -> ClipRequest:
        pre = int(self.settings.pre_roll_s * SAMPLE_RATE)
        post = int(self.settings.post_roll_s * SAMPLE_RATE)
        return ClipRequest(
            clip_id=uuid.uuid4().hex,
            reason=reason,
            event_id=event_id,
            start=max(0, span_start - pre),
            stop=span_stop + post,
            window_pos=window_pos,
            context=context,
        )


class PendingClips:
    """Clip requests waiting for audio and scores; resolved in arrival order."""

    def __init__(self, settings: ClipSettings, privacy: PrivacyFilter) -> None:
        self.settings = settings
        self.privacy = privacy
        self._pending: deque[ClipRequest] = deque()
        self.too_large = 0  # encoded clips above clips.max_bytes: reported, never sent
        self.sent = 0

    def add(self, request: ClipRequest) -> None:
        self._pending.append(request)

    def __len__(self) -> int:
        return len(self._pending)

    def resolve(
        self, ring: AudioRing, scored_until: int, speech_max: SpeechTrack, final: bool = False
    ) -> list[ReadyClip]:
        ready: list[ReadyClip] = []
        while self._pending and (final or self._pending[0].stop <= scored_until):
            req = self._pending.popleft()
            # Decide before touching the audio: a blocked clip is never encoded or stored.
            if not self.privacy.allows(speech_max.max_between(req.start, req.stop)):
                continue
            samples = ring.read(req.start, req.stop)
            if samples.size == 0:
                continue
            flac = audio.encode_flac(samples)
            if len(flac) > self.settings.max_bytes:
                self.too_large += 1
                log.warning(
                    "clip of %d bytes withheld: above clips.max_bytes (%d)",
                    len(flac),
                    self.settings.max_bytes,
                )
                continue
            self.sent += 1
            ready.append(ReadyClip(req, flac, max(req.start, ring.start), samples.size))
        return ready


class SpeechTrack:
    """Speech-group score of recent windows by position, for the privacy decision."""

    def __init__(self, horizon_samples: int) -> None:
        self.horizon = horizon_samples
        self._windows: deque[tuple[int, int, float]] = deque()

    def add(self, start: int, stop: int, score: float) -> None:
        self._windows.append((start, stop, score))
        while self._windows and self._windows[0][1] < stop - self.horizon:
            self._windows.popleft()

    def max_between(self, start: int, stop: int) -> float:
        best = 0.0
        for w_start, w_stop, score in self._windows:
            if w_start < stop and w_stop > start:
                best = max(best, score)
        return best
