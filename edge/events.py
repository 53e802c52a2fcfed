"""Turn per-window scores into events: start / update / end of a sound of interest.

Per trigger: a threshold to start, hysteresis to end, a minimum number of consecutive
positive windows, a cooldown after the end, and a volume gate so silence (where YAMNet's
scores are meaningless) never starts an event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from earwitness.edge.config import DetectionSettings, Trigger
from earwitness.shared.errors import ConfigError
from earwitness.shared.labels import ClassMap, LabelGroups
from earwitness.shared.messages import EventPhase


@dataclass(frozen=True)
class EventUpdate:
    event_id: str
    phase: EventPhase
    label: str
    group: str | None
    started_at: datetime
    duration_s: float
    peak_score: float
    windows: int
    peak_dbfs: float
    first_window_start: datetime


DEFAULT_THRESHOLD = 0.5  # labels and groups; a custom class defaults to its head's


@dataclass(frozen=True)
class Resolved:
    """A trigger bound to what it reads: an AudioSet index, a group, or a custom class."""

    trigger: Trigger
    index: int | None
    threshold: float


@dataclass
class _State:
    positives: int = 0
    candidate_start: datetime | None = None
    active: bool = False
    event_id: str = ""
    started_at: datetime | None = None
    last_end: datetime | None = None
    peak: float = 0.0
    peak_dbfs: float = -120.0
    windows: int = 0
    last_update: datetime | None = None
    cooldown_until: datetime | None = None


class EventDetector:
    def __init__(
        self,
        settings: DetectionSettings,
        class_map: ClassMap,
        groups: LabelGroups,
        custom_thresholds: dict[str, float] | None = None,
    ) -> None:
        """``custom_thresholds``: every class of the loaded heads, with its calibrated
        threshold (what a custom trigger without its own threshold uses)."""
        self.settings = settings
        custom = custom_thresholds or {}
        self._resolved: list[Resolved] = []
        for trig in settings.triggers:
            threshold = trig.threshold if trig.threshold is not None else DEFAULT_THRESHOLD
            if trig.group is not None:
                if trig.group not in groups:
                    raise ConfigError(f"detection.triggers: unknown group '{trig.group}'")
                self._resolved.append(Resolved(trig, None, threshold))
            elif trig.custom is not None:
                if trig.custom not in custom:
                    known = ", ".join(sorted(custom)) or "none: set model.heads"
                    raise ConfigError(
                        f"detection.triggers: custom class '{trig.custom}' is in no loaded"
                        f" head (custom classes: {known})"
                    )
                if trig.threshold is None:
                    threshold = custom[trig.custom]
                self._resolved.append(Resolved(trig, None, threshold))
            else:
                found = class_map.find(trig.label or "")
                if found is None:
                    raise ConfigError(f"detection.triggers: unknown label '{trig.label}'")
                self._resolved.append(Resolved(trig, found.index, threshold))
        self._states = [_State() for _ in self._resolved]

    def labels_of_interest(self) -> list[Resolved]:
        return list(self._resolved)

    @staticmethod
    def score_of(
        r: Resolved,
        scores: npt.NDArray[np.float32],
        group_scores: dict[str, float],
        custom: dict[str, float] | None = None,
    ) -> float:
        trig = r.trigger
        if trig.group is not None:
            return group_scores[trig.group]
        if trig.custom is not None:
            return (custom or {}).get(trig.custom, 0.0)
        return float(scores[r.index])

    def update(
        self,
        window_start: datetime,
        window_s: float,
        scores: npt.NDArray[np.float32],
        group_scores: dict[str, float],
        level_dbfs: float,
        custom: dict[str, float] | None = None,
    ) -> list[EventUpdate]:
        out: list[EventUpdate] = []
        window_end = window_start + timedelta(seconds=window_s)
        for r, st in zip(self._resolved, self._states, strict=True):
            trig = r.trigger
            score = self.score_of(r, scores, group_scores, custom)
            if st.active:
                if score >= r.threshold - trig.hysteresis:
                    st.windows += 1
                    st.last_end = window_end
                    st.peak = max(st.peak, score)
                    st.peak_dbfs = max(st.peak_dbfs, level_dbfs)
                    assert st.last_update is not None
                    if (
                        window_start - st.last_update
                    ).total_seconds() >= self.settings.update_every_s:
                        st.last_update = window_start
                        out.append(self._emit(trig, st, "update"))
                else:
                    out.append(self._emit(trig, st, "end"))
                    st.active = False
                    st.positives = 0
                    st.cooldown_until = (st.last_end or window_end) + timedelta(
                        seconds=self.settings.cooldown_s
                    )
                continue
            if st.cooldown_until is not None and window_start < st.cooldown_until:
                continue
            if score >= r.threshold and level_dbfs >= self.settings.min_dbfs:
                if st.positives == 0:
                    st.candidate_start = window_start
                    st.peak = 0.0
                    st.peak_dbfs = -120.0
                st.positives += 1
                st.peak = max(st.peak, score)
                st.peak_dbfs = max(st.peak_dbfs, level_dbfs)
                if st.positives >= self.settings.min_windows:
                    st.active = True
                    st.event_id = uuid.uuid4().hex
                    st.started_at = st.candidate_start
                    st.windows = st.positives
                    st.last_end = window_end
                    st.last_update = window_start
                    out.append(self._emit(trig, st, "start"))
            else:
                st.positives = 0
        return out

    def close(self) -> list[EventUpdate]:
        """End every active event (stream ended or agent stopping)."""
        out = []
        for r, st in zip(self._resolved, self._states, strict=True):
            if st.active:
                out.append(self._emit(r.trigger, st, "end"))
                st.active = False
        return out

    @staticmethod
    def _emit(trig: Trigger, st: _State, phase: EventPhase) -> EventUpdate:
        assert st.started_at is not None and st.last_end is not None
        return EventUpdate(
            event_id=st.event_id,
            phase=phase,
            label=trig.target,
            group=trig.group,
            started_at=st.started_at,
            duration_s=round((st.last_end - st.started_at).total_seconds(), 3),
            peak_score=round(st.peak, 4),
            windows=st.windows,
            peak_dbfs=round(st.peak_dbfs, 2),
            first_window_start=st.started_at,
        )
