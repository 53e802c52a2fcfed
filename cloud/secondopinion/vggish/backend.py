"""The `vggish` second-opinion backend: VGGish features, then a head whose classes are
AudioSet classes, scattered onto YAMNet's 521-class vocabulary so agreement is measured
on the same ids and label groups as the edge's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earwitness.cloud.secondopinion.backends import Opinion, UnavailableBackend, opinion_from_scores
from earwitness.cloud.secondopinion.vggish import params
from earwitness.cloud.secondopinion.vggish.runtime import Head, VggishEmbedder
from earwitness.shared.audio import Waveform
from earwitness.shared.errors import ModelError
from earwitness.shared.labels import ClassMap, LabelGroups
from earwitness.shared.model_registry import CLASS_MAP, locate, model_dir


class VGGish:
    name = "vggish"

    def __init__(self, model_dir_: Path | None = None, threads: int = 1) -> None:
        directory = model_dir_ or model_dir()
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise UnavailableBackend(
                "vggish: onnxruntime is not installed (pip install 'earwitness[cloud]')"
            ) from None
        try:
            self.embedder = VggishEmbedder(directory, threads)
            self.head = Head(directory / params.HEAD_FILE, threads)
            self.class_map = ClassMap.load(locate(CLASS_MAP, directory))
        except ModelError as exc:
            raise UnavailableBackend(str(exc)) from exc
        self.indices = []
        for name in self.head.classes:
            found = self.class_map.find(name)
            if found is None:
                raise UnavailableBackend(
                    f"vggish: head class '{name}' is not in the AudioSet class map"
                )
            self.indices.append(found.index)
        self.groups = LabelGroups.load(self.class_map)
        self.model_id = f"{self.embedder.model_id}+{self.head.model_id}"

    def score(self, wave: Waveform) -> Opinion:
        head_scores = self.head.scores(self.embedder.features(wave)).mean(axis=0)
        scores = np.zeros(len(self.class_map), dtype=np.float32)
        scores[self.indices] = head_scores
        return opinion_from_scores(self.name, self.model_id, scores, self.class_map, self.groups)
