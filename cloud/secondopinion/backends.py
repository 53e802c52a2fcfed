"""Second-opinion backends. Each maps a clip's audio onto YAMNet's AudioSet vocabulary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from earwitness.shared.audio import Waveform
from earwitness.shared.errors import ModelError
from earwitness.shared.labels import ClassMap, LabelGroups
from earwitness.shared.model_registry import CLASS_MAP, locate
from earwitness.shared.runner import YamnetModel


@dataclass(frozen=True)
class Opinion:
    backend: str
    model_id: str
    label: str
    label_index: int | None
    score: float
    scores: npt.NDArray[np.float32]  # clip-level (mean-pooled) AudioSet scores
    groups: dict[str, float]


def opinion_from_scores(
    backend: str,
    model_id: str,
    scores: npt.NDArray[np.floating],
    class_map: ClassMap,
    groups: LabelGroups,
) -> Opinion:
    """The top label and the label groups of a clip's AudioSet scores, as every backend
    reports them."""
    best = int(np.argmax(scores))
    as32 = scores.astype(np.float32, copy=False)
    return Opinion(
        backend,
        model_id,
        class_map[best].name,
        best,
        float(scores[best]),
        as32,
        groups.scores(as32),
    )


class Backend(Protocol):
    name: str

    def score(self, wave: Waveform) -> Opinion: ...


class UnavailableBackend(Exception):
    """A backend that cannot run here (weights missing): the worker carries on without it."""


class YamnetReference:
    """The waveform-input YAMNet: TensorFlow's own frontend in the graph, float weights —
    an independent path from the edge's numpy frontend and int8 model."""

    name = "yamnet-reference"

    def __init__(self, model_dir: Path | None = None, threads: int = 1) -> None:
        try:
            self.model = YamnetModel.load("yamnet-waveform", model_dir, threads=threads)
            self.class_map = ClassMap.load(locate(CLASS_MAP, model_dir))
        except ModelError as exc:
            raise UnavailableBackend(f"{self.name}: {exc}") from exc
        self.groups = LabelGroups.load(self.class_map)

    def score(self, wave: Waveform) -> Opinion:
        scores = np.mean([w.scores for w in self.model.classify(wave)], axis=0)
        return opinion_from_scores(
            self.name, self.model.model_id, scores, self.class_map, self.groups
        )


def _vggish(model_dir: Path | None = None) -> Backend:
    from earwitness.cloud.secondopinion.vggish.backend import VGGish

    return VGGish(model_dir)


BACKENDS = {"yamnet-reference": YamnetReference, "vggish": _vggish}
