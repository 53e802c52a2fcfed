"""Zero-shot accuracy of YAMNet on an ESC-50-style folder (``meta.csv`` + audio files)."""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from earwitness.shared.errors import ConfigError, EarwitnessError
from earwitness.shared.labels import ClassMap

MAPPING_FILE = "esc50_audioset.yaml"


def load_mapping(class_map: ClassMap, path: Path | None = None) -> dict[str, list[int]]:
    if path is None:
        text = resources.files("earwitness.shared.data").joinpath(MAPPING_FILE).read_text()
        source = f"shared/data/{MAPPING_FILE}"
    else:
        text, source = path.read_text(encoding="utf-8"), str(path)
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of category -> list of class names")
    mapping: dict[str, list[int]] = {}
    for category, names in data.items():
        indices = []
        for name in names:
            found = class_map.find(str(name))
            if found is None:
                raise ConfigError(f"{source}: category '{category}': unknown class '{name}'")
            indices.append(found.index)
        mapping[str(category)] = indices
    return mapping


@dataclass(frozen=True)
class Example:
    path: Path
    category: str


def read_meta(directory: Path) -> list[Example]:
    meta = directory / "meta.csv"
    if not meta.is_file():
        raise EarwitnessError(f"{meta}: not found (eval needs an ESC-50-style meta.csv)")
    with meta.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not {"filename", "category"} <= set(reader.fieldnames or []):
            raise EarwitnessError(f"{meta}: needs 'filename' and 'category' columns")
        return [Example(directory / row["filename"], row["category"]) for row in reader]


@dataclass
class EvalReport:
    pooling: str
    total: int = 0
    correct: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    per_class: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    confusions: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def add(self, truth: str, predicted: str) -> None:
        self.total += 1
        self.per_class[truth][1] += 1
        if truth == predicted:
            self.correct += 1
            self.per_class[truth][0] += 1
        else:
            self.confusions[(truth, predicted)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "pooling": self.pooling,
            "clips": self.total,
            "correct": self.correct,
            "accuracy": round(self.accuracy, 4),
            "per_class": {
                c: {"correct": ok, "total": n, "accuracy": round(ok / n, 3)}
                for c, (ok, n) in sorted(self.per_class.items())
            },
            "top_confusions": [
                {"truth": t, "predicted": p, "count": n}
                for (t, p), n in self.confusions.most_common(15)
            ],
            "failed": [{"path": p, "error": e} for p, e in self.failed],
        }


def predict(clip_scores: npt.NDArray[np.float32], mapping: dict[str, list[int]]) -> str:
    categories = list(mapping)
    best = [float(clip_scores[idx].max()) for idx in mapping.values()]
    return categories[int(np.argmax(best))]


def evaluate(
    examples: list[Example],
    score_clip: Callable[[Path], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]],
    mapping: dict[str, list[int]],
    on_progress: Callable[[], None] | None = None,
) -> dict[str, EvalReport]:
    """Score every clip once and report accuracy for both mean and max pooling."""
    unknown = sorted({e.category for e in examples} - set(mapping))
    if unknown:
        raise ConfigError(f"categories without an AudioSet mapping: {', '.join(unknown)}")
    reports = {"mean": EvalReport("mean"), "max": EvalReport("max")}
    for example in examples:
        try:
            mean, peak = score_clip(example.path)
        except EarwitnessError as exc:
            for r in reports.values():
                r.failed.append((str(example.path), str(exc)))
            continue
        finally:
            if on_progress:
                on_progress()
        reports["mean"].add(example.category, predict(mean, mapping))
        reports["max"].add(example.category, predict(peak, mapping))
    return reports
