"""Train the classifier head on VGGish features of labelled clips.

One-vs-rest logistic regression (independent sigmoid scores, like YAMNet's) fitted by
full-batch gradient descent: a few thousand 128-d rows need nothing more. The default
training set is ESC-50, each category mapped to its first AudioSet class in
shared/data/esc50_audioset.yaml, so the head speaks the edge's vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from earwitness.cloud.secondopinion.vggish import graph, params
from earwitness.cloud.secondopinion.vggish.postprocess import dequantize
from earwitness.cloud.secondopinion.vggish.runtime import VggishEmbedder
from earwitness.shared import audio
from earwitness.shared.errors import ModelError
from earwitness.shared.evaluate import read_meta
from earwitness.shared.labels import ClassMap

Progress = Callable[[int, int], None]

L2 = 1e-3  # weight decay: few clips per class, keep the head from memorising them
STEPS = 600
LEARNING_RATE = 0.5


@dataclass(frozen=True)
class Trained:
    weights: npt.NDArray[np.float32]  # (128, C) on dequantized features
    bias: npt.NDArray[np.float32]
    classes: list[str]
    train_accuracy: float
    rows: int


def fit(
    features: npt.NDArray[np.uint8], targets: npt.NDArray[np.int64], classes: list[str]
) -> Trained:
    """Fit on (n, 128) uint8 features and class indices; standardisation is folded into
    the weights so the exported head reads dequantized features directly."""
    x = dequantize(features).astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / std
    y = np.zeros((len(targets), len(classes)))
    y[np.arange(len(targets)), targets] = 1.0
    w = np.zeros((z.shape[1], len(classes)))
    b = np.zeros(len(classes))
    for _ in range(STEPS):
        p = 1.0 / (1.0 + np.exp(-(z @ w + b)))
        grad = p - y
        w -= LEARNING_RATE * (z.T @ grad / len(z) + L2 * w)
        b -= LEARNING_RATE * grad.mean(axis=0)
    accuracy = float(np.mean(np.argmax(z @ w + b, axis=1) == targets))
    folded_w = w / std[:, None]
    folded_b = b - (mean / std) @ w
    return Trained(
        folded_w.astype(np.float32), folded_b.astype(np.float32), classes, accuracy, len(z)
    )


def esc50_training_set(
    embedder: VggishEmbedder,
    directory: Path,
    mapping: dict[str, list[int]],
    class_map: ClassMap,
    categories: Sequence[str] | None = None,
    progress: Progress = lambda _done, _total: None,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], list[str]]:
    """VGGish features of every 0.96 s example of the ESC-50 clips, labelled with the
    first AudioSet class of their category."""
    examples = [e for e in read_meta(directory) if categories is None or e.category in categories]
    if not examples:
        raise ModelError(f"{directory}: no ESC-50 clips for categories {categories}")
    names = sorted({class_map[mapping[e.category][0]].name for e in examples})
    rows: list[npt.NDArray[np.uint8]] = []
    targets: list[int] = []
    for done, example in enumerate(examples, start=1):
        feats = embedder.features(audio.load(example.path))
        rows.append(feats)
        targets += [names.index(class_map[mapping[example.category][0]].name)] * len(feats)
        progress(done, len(examples))
    return np.concatenate(rows), np.asarray(targets, dtype=np.int64), names


def save(trained: Trained, path: Path, source: str) -> Path:
    model = graph.head_model(
        trained.weights,
        trained.bias,
        trained.classes,
        {
            "trained_on": source,
            "train_rows": str(trained.rows),
            "train_accuracy": f"{trained.train_accuracy:.4f}",
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "features": f"VGGish PCA uint8 ({params.PCA_FILE})",
        },
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, path)
    return path
