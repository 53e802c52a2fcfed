"""Classify whole audio files: per-window top-k plus a clip-level summary."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from earwitness.shared import audio
from earwitness.shared.errors import EarwitnessError
from earwitness.shared.frontend import StreamingFrontend
from earwitness.shared.heads import Head, head_features
from earwitness.shared.labels import ClassMap
from earwitness.shared.model_registry import InputKind
from earwitness.shared.runner import YamnetModel

LONG_FILE_S = 600.0
"""Files longer than this are decoded and classified block by block (`classify_stream`):
a one-hour file decoded whole, with all its patches, peaked at 510 MB."""


@dataclass(frozen=True)
class Label:
    index: int
    mid: str
    name: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "mid": self.mid, "name": self.name, "score": self.score}


@dataclass
class FileResult:
    path: str
    duration_s: float
    windows: list[tuple[float, list[Label]]] = field(default_factory=list)
    mean_scores: npt.NDArray[np.float32] | None = None
    max_scores: npt.NDArray[np.float32] | None = None
    summary_mean: list[Label] = field(default_factory=list)
    summary_max: list[Label] = field(default_factory=list)
    custom: CustomResult | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "duration_s": round(self.duration_s, 3),
            "windows": [
                {"start_s": round(t, 2), "top": [lbl.as_dict() for lbl in top]}
                for t, top in self.windows
            ],
            "summary": {
                "mean": [lbl.as_dict() for lbl in self.summary_mean],
                "max": [lbl.as_dict() for lbl in self.summary_max],
            },
        } | ({"custom": self.custom.as_dict()} if self.custom is not None else {})


@dataclass
class CustomResult:
    """A custom head's scores per window, and per file (max over windows) with decisions."""

    head_id: str
    classes: list[str]
    thresholds: dict[str, float]
    windows: npt.NDArray[np.float32]  # (windows, classes)

    @property
    def file_scores(self) -> dict[str, float]:
        peak = self.windows.max(axis=0)
        return {c: round(float(v), 4) for c, v in zip(self.classes, peak, strict=True)}

    @property
    def detected(self) -> list[str]:
        return [c for c, v in self.file_scores.items() if v >= self.thresholds[c]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "head": self.head_id,
            "thresholds": self.thresholds,
            "scores": self.file_scores,
            "detected": self.detected,
            "windows": [
                {c: round(float(v), 4) for c, v in zip(self.classes, row, strict=True)}
                for row in self.windows
            ],
        }


def _labels(class_map: ClassMap, scores: npt.NDArray[np.float32], k: int) -> list[Label]:
    return [Label(c.index, c.mid, c.name, round(s, 4)) for c, s in class_map.top_k(scores, k)]


def classify_waveform(
    model: YamnetModel,
    class_map: ClassMap,
    waveform: audio.Waveform,
    path: str,
    top_k: int,
    head: Head | None = None,
) -> FileResult:
    results = model.classify(waveform)
    scores = np.stack([r.scores for r in results])
    custom = None
    if head is not None:
        embeddings = np.stack([r.embedding for r in results if r.embedding is not None])
        custom = CustomResult(
            head.head_id,
            head.classes,
            head.thresholds,
            head.scores(head_features(embeddings, scores)),
        )
    mean = scores.mean(axis=0)
    peak = scores.max(axis=0)
    return FileResult(
        path=path,
        duration_s=waveform.size / audio.SAMPLE_RATE,
        windows=[(r.start_seconds, _labels(class_map, r.scores, top_k)) for r in results],
        mean_scores=mean,
        max_scores=peak,
        summary_mean=_labels(class_map, mean, top_k),
        summary_max=_labels(class_map, peak, top_k),
        custom=custom,
    )


def classify_stream(
    model: YamnetModel,
    class_map: ClassMap,
    blocks: Iterable[audio.Waveform],
    path: str,
    top_k: int,
    head: Head | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> FileResult:
    """``classify_waveform`` for audio that arrives in blocks: the streaming frontend (its
    patches are bit-identical to the whole-file ones), running mean and max, one
    window's scores in memory at a time. ``on_progress`` gets the seconds decoded."""
    if model.kind is not InputKind.PATCH:
        return classify_waveform(model, class_map, np.concatenate(list(blocks)), path, top_k, head)
    frontend = StreamingFrontend()
    total: npt.NDArray[np.float64] | None = None
    peak: npt.NDArray[np.float32] | None = None
    windows: list[tuple[float, list[Label]]] = []
    custom_rows: list[npt.NDArray[np.float32]] = []
    previous: npt.NDArray[np.float32] | None = None  # the last window's head input (delta)

    def run(patches: list[Any]) -> None:
        nonlocal total, peak, previous
        for patch in patches:
            r = model.run_patch(patch.features)
            total = r.scores.astype(np.float64) if total is None else total + r.scores
            peak = r.scores.copy() if peak is None else np.maximum(peak, r.scores)
            windows.append((patch.start_seconds, _labels(class_map, r.scores, top_k)))
            if head is not None and r.embedding is not None:
                window = head_features(r.embedding, r.scores)
                custom_rows.append(head.scores(window, previous)[0])
                previous = window

    for block in blocks:
        run(frontend.push(block))
        if on_progress is not None:
            on_progress(block.size / audio.SAMPLE_RATE)
    decoded = frontend.samples_seen  # before the flush pads the tail
    run(frontend.flush())
    if total is None or peak is None:
        raise EarwitnessError(f"{path}: audio is empty (0 samples)")
    mean = (total / len(windows)).astype(np.float32)
    custom = None
    if head is not None:
        custom = CustomResult(head.head_id, head.classes, head.thresholds, np.stack(custom_rows))
    return FileResult(
        path=path,
        duration_s=decoded / audio.SAMPLE_RATE,
        windows=windows,
        mean_scores=mean,
        max_scores=peak,
        summary_mean=_labels(class_map, mean, top_k),
        summary_max=_labels(class_map, peak, top_k),
        custom=custom,
    )


class LongFile:
    """Marks a file ``iter_decoded`` left to be streamed (see ``LONG_FILE_S``)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


def classify_file(model: YamnetModel, class_map: ClassMap, path: Path, top_k: int) -> FileResult:
    return classify_waveform(model, class_map, audio.load(path), str(path), top_k)


def iter_decoded(
    paths: list[Path], threads: int = 1, long_file_s: float | None = None
) -> Iterator[tuple[Path, audio.Waveform | EarwitnessError | LongFile]]:
    """Decode files in order; with ``threads`` > 0, decode ahead in background threads.

    libsndfile and soxr release the GIL, so decoding the next file overlaps inference on
    the current one. Look-ahead is bounded to ``threads + 1`` files to bound memory.
    """

    def load(path: Path) -> audio.Waveform | EarwitnessError | LongFile:
        if long_file_s is not None:
            seconds = audio.duration_s(path)
            if seconds is not None and seconds > long_file_s:
                return LongFile(seconds)  # decoded block by block by the caller
        try:
            return audio.load(path)
        except EarwitnessError as exc:
            return exc

    if threads <= 0:
        for path in paths:
            yield path, load(path)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        pending: deque[tuple[Path, Future[audio.Waveform | EarwitnessError | LongFile]]] = deque()
        it = iter(paths)
        for path in it:
            pending.append((path, pool.submit(load, path)))
            if len(pending) > threads:
                break
        while pending:
            path, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(load, nxt)))
            yield path, future.result()
