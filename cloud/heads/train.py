"""`earwitness train`: a custom head from labelled clips, calibrated on held-out groups.

Clip labels, window model. A 5 s clip labelled ``glass_break`` holds one crash and
seconds of room noise, so its windows are not all positives. Multiple-instance learning,
in two rounds:

1. Each positive clip's windows within ``LOUD_DB`` of its loudest window are positives
   for its class (an event is louder than the room around it); quieter windows of that
   clip are left out of its class's loss (neither positive nor negative), and count as
   negatives for the other classes. Every window of a background clip is a negative.
2. The first model scores the positive clips' windows; those scoring at least
   ``MIL_KEEP`` of their clip's best window become the positives, and the head is trained
   again. A clip's score is the maximum over its windows (max pooling), for calibration,
   evaluation and on the device alike.

Positive clips get ``copies`` augmented versions (pitch shift, time stretch, mixing into
a training background clip at 0-20 dB SNR, gain, time shift); background clips one copy
(gain and shift). Everything is seeded. Thresholds are calibrated at clip level on a
group-held-out validation split for the target precision.

Extra clips (``earwitness train --extra DIR``, a general sound corpus such as ESC-50) are
training-only: never held out, so the validation report measures the labelled folder
alone. Their other classes are background, which is what a head needs most: the
negatives that fool it are kinds of sound it never heard (on ESC-50 clips no head had
heard, 8 false alarms in 103 from distress clips alone, 1 with ESC-50's other half).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from earwitness.cloud.heads.augment import AugmentSettings, augment
from earwitness.cloud.heads.dataset import Example, data_hash, group_folds
from earwitness.shared import audio
from earwitness.shared.errors import ConfigError
from earwitness.shared.heads import CLASS_NAME, Head, head_features, to_float16_grid, with_delta
from earwitness.shared.runner import YamnetModel

LOUD_DB = 10.0
MIL_KEEP = 0.5
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class TrainSettings:
    background: str = "negative"
    target_precision: float = 0.95
    validation: float = 0.2  # share of groups held out for calibration
    seed: int = 0
    hidden: int = 32  # per member
    # An ensemble, stored as one MLP with members x hidden units (96: ~0.02 ms a window).
    # Three members halved the spread of recall at 95 % precision between training seeds.
    members: int = 3
    epochs: int = 8
    learning_rate: float = 1e-3
    l2: float = 3e-2
    dropout: float = 0.5  # 0.2 let single windows of unseen negatives saturate at 1.0
    batch: int = 256
    negative_copies: int = 1
    # Also read each window's embedding change from the previous one (shared.heads). Not
    # the default: on the distress folds it raised mean recall at precision 0.95 (glass
    # 0.916 -> 0.960, scream 0.910 -> 0.924 over two splits) but on ESC-50 clips no head
    # had heard it raised false alarms (1 -> 2 with three members, 1 -> 5 with two), and
    # a 96-unit delta head is too large to travel inline (docs/benchmarks.md).
    delta: bool = False
    augment: AugmentSettings = field(default_factory=AugmentSettings)


@dataclass
class Clip:
    """One clip (or augmented copy) as windows: features and loudness per window."""

    label: str
    group: str
    features: F32  # (windows, INPUT_SIZE)
    levels_db: F32  # (windows,)
    source: str
    augmented: bool = False


def embed(model: YamnetModel, wave: F32, level_of: F32 | None = None) -> tuple[F32, F32]:
    """Window features of ``wave`` and each window's level in dB, read from ``level_of``
    (the event without mixed-in background) when given."""
    windows = model.classify(wave)
    level_wave = wave if level_of is None else level_of
    emb = np.stack([w.embedding for w in windows if w.embedding is not None])
    scores = np.stack([w.scores for w in windows])
    hop = int(audio.SAMPLE_RATE * 0.48)
    levels = []
    for i in range(len(windows)):
        seg = level_wave[i * hop : i * hop + 15600]
        levels.append(10 * np.log10(np.mean(np.square(seg, dtype=np.float64)) + 1e-12))
    return head_features(emb, scores), np.array(levels, dtype=np.float32)


def _mlp_train(x: F32, y: F32, w: F32, s: TrainSettings, seed: int) -> dict[str, F32]:
    """Weighted binary cross-entropy, Adam, dropout on the hidden layer."""
    rng = np.random.default_rng(seed)
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-3
    z = ((x - mean) / scale).astype(np.float32)
    n, dim = z.shape
    classes = y.shape[1]
    params = [
        rng.normal(0, np.sqrt(2 / dim), (dim, s.hidden)).astype(np.float32),
        np.zeros(s.hidden, np.float32),
        rng.normal(0, np.sqrt(1 / s.hidden), (s.hidden, classes)).astype(np.float32),
        np.zeros(classes, np.float32),
    ]
    m1 = [np.zeros_like(p) for p in params]
    m2 = [np.zeros_like(p) for p in params]
    step = 0
    for _epoch in range(s.epochs):
        order = rng.permutation(n)
        for start in range(0, n, s.batch):
            idx = order[start : start + s.batch]
            zb, yb, wb = z[idx], y[idx], w[idx]
            mask = (rng.random((len(idx), s.hidden)) > s.dropout).astype(np.float32)
            mask /= 1 - s.dropout
            pre = zb @ params[0] + params[1]
            hidden = np.maximum(pre, 0) * mask
            out = hidden @ params[2] + params[3]
            p = 1 / (1 + np.exp(-np.clip(out, -60, 60)))
            g = (p - yb) * wb / len(idx)
            gh = (g @ params[2].T) * (pre > 0) * mask
            grads = [
                zb.T @ gh + s.l2 * params[0],
                gh.sum(0),
                hidden.T @ g + s.l2 * params[2],
                g.sum(0),
            ]
            step += 1
            for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
                m1[i] = 0.9 * m1[i] + 0.1 * grad
                m2[i] = 0.999 * m2[i] + 0.001 * grad * grad
                corrected = (m1[i] / (1 - 0.9**step)) / (np.sqrt(m2[i] / (1 - 0.999**step)) + 1e-8)
                param -= np.float32(s.learning_rate) * corrected.astype(np.float32)
    return {
        "mean": mean.astype(np.float32),
        "scale": scale.astype(np.float32),
        "w1": params[0],
        "b1": params[1],
        "w2": params[2],
        "b2": params[3],
    }


def _window_targets(
    clips: list[Clip], classes: list[str], scorer: Callable[[F32], F32] | None, delta: bool
) -> tuple[F32, F32, F32]:
    xs, ys, ws = [], [], []
    for clip in clips:
        y = np.zeros((len(clip.features), len(classes)), np.float32)
        w = np.ones_like(y)
        if clip.label in classes:
            k = classes.index(clip.label)
            if scorer is None:
                positive = clip.levels_db >= clip.levels_db.max() - LOUD_DB
            else:
                s = scorer(clip.features)[:, k]
                positive = s >= MIL_KEEP * s.max()
            y[positive, k] = 1
            w[~positive, k] = 0  # unknown: maybe the event's tail, maybe the room
        xs.append(with_delta(clip.features) if delta else clip.features)
        ys.append(y)
        ws.append(w)
    x, y, w = np.concatenate(xs), np.concatenate(ys), np.concatenate(ws)
    positives = y.sum(axis=0)
    negatives = (w * (1 - y)).sum(axis=0)
    # Balance each class's loss (square root: full balancing overweights a few clips).
    w = w * np.where(y == 1, np.sqrt(negatives / np.maximum(positives, 1)), 1.0)
    return x, y, w.astype(np.float32)


def fit_head(
    clips: list[Clip], classes: list[str], settings: TrainSettings, model_id: str, name: str
) -> Head:
    """Two MIL rounds; thresholds are set to 0.5 until `calibrate` replaces them."""
    delta = settings.delta
    x, y, w = _window_targets(clips, classes, None, delta)
    first = _head(_ensemble(x, y, w, settings, settings.seed), classes, model_id, name, delta)
    x, y, w = _window_targets(clips, classes, first.scores, delta)
    return _head(_ensemble(x, y, w, settings, settings.seed + 100), classes, model_id, name, delta)


def _ensemble(x: F32, y: F32, w: F32, settings: TrainSettings, seed: int) -> dict[str, F32]:
    """``members`` MLPs from different seeds, merged into one wider MLP whose output
    logits are the members' mean: the same cost per window as one MLP of that width,
    and far less variance between training runs than one small MLP."""
    members = [_mlp_train(x, y, w, settings, seed + i) for i in range(settings.members)]
    k = len(members)
    return {
        "mean": members[0]["mean"],
        "scale": members[0]["scale"],
        "w1": np.concatenate([m["w1"] for m in members], axis=1),
        "b1": np.concatenate([m["b1"] for m in members]),
        "w2": (np.concatenate([m["w2"] for m in members], axis=0) / k).astype(np.float32),
        "b2": (np.mean([m["b2"] for m in members], axis=0)).astype(np.float32),
    }


def _head(
    arrays: dict[str, F32], classes: list[str], model_id: str, name: str, delta: bool
) -> Head:
    """Weights on the float16 grid from here on: calibration, the report and the saved
    file all see the model a device will load."""
    rounded = {k: to_float16_grid(v) for k, v in arrays.items()}
    return Head(name, classes, {c: 0.5 for c in classes}, model_id, rounded, delta=delta)


def clip_scores(head: Head, clips: list[Clip]) -> F32:
    """(clips, classes): each clip's best window."""
    return np.stack([head.scores(c.features).max(axis=0) for c in clips]).astype(np.float32)


# --- metrics -------------------------------------------------------------------------


def pr_curve(scores: F32, truth: npt.NDArray[np.bool_]) -> tuple[F32, F32, F32]:
    """Precision, recall and threshold at every distinct score, highest threshold first."""
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], truth[order].astype(np.float64)
    tp, fp = np.cumsum(t), np.cumsum(1 - t)
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # end of each run of equal scores
    precision = tp[last] / np.maximum(tp[last] + fp[last], 1)
    recall = tp[last] / max(t.sum(), 1)
    return precision.astype(np.float32), recall.astype(np.float32), s[last].astype(np.float32)


def recall_at_precision(
    scores: F32, truth: npt.NDArray[np.bool_], target: float
) -> tuple[float, float]:
    """Best recall with precision >= target, and the threshold giving it (1.0 if none)."""
    precision, recall, thresholds = pr_curve(scores, truth)
    ok = np.nonzero(precision >= target)[0]
    if len(ok) == 0 or truth.sum() == 0:
        return 0.0, 1.0
    best = ok[np.argmax(recall[ok])]
    return float(recall[best]), float(thresholds[best])


def auc(scores: F32, truth: npt.NDArray[np.bool_]) -> float:
    """ROC AUC as the probability a positive outranks a negative (ties count half)."""
    pos, neg = scores[truth], scores[~truth]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    ranks = np.argsort(np.argsort(np.r_[pos, neg], kind="stable"), kind="stable") + 1.0
    # average ranks of ties
    values = np.r_[pos, neg]
    for v in np.unique(values):
        same = values == v
        if same.sum() > 1:
            ranks[same] = ranks[same].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def evaluate_scores(
    scores: F32,
    labels: list[str],
    classes: list[str],
    thresholds: dict[str, float],
    background: str,
    target: float,
) -> dict[str, Any]:
    """Clip-level report: per class precision/recall at its threshold, recall at the
    target precision, AUC, PR curve; a confusion matrix over classes + background."""
    per_class: dict[str, Any] = {}
    for k, c in enumerate(classes):
        truth = np.array([lab == c for lab in labels])
        decided = scores[:, k] >= thresholds[c]
        tp = int((decided & truth).sum())
        fp = int((decided & ~truth).sum())
        fn = int((~decided & truth).sum())
        r_at, _thr_at = recall_at_precision(scores[:, k], truth, target)
        precision, recall, thr = pr_curve(scores[:, k], truth)
        per_class[c] = {
            "clips": int(truth.sum()),
            "threshold": round(float(thresholds[c]), 6),
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            f"recall_at_p{round(target * 100)}": round(r_at, 4),
            "auc": _finite(auc(scores[:, k], truth)),
            "pr_curve": {
                "precision": [round(float(v), 4) for v in precision],
                "recall": [round(float(v), 4) for v in recall],
                "threshold": [round(float(v), 6) for v in thr],
            },
        }
    names = [*classes, background]
    matrix = [[0] * len(names) for _ in names]
    thr = np.array([thresholds[c] for c in classes])
    for row, lab in zip(scores, labels, strict=True):
        ratio = np.where(row >= thr, row / np.maximum(thr, 1e-6), -1)
        predicted = names[int(np.argmax(ratio))] if ratio.max() > 0 else background
        true_name = lab if lab in classes else background
        matrix[names.index(true_name)][names.index(predicted)] += 1
    return {"per_class": per_class, "confusion": {"labels": names, "matrix": matrix}}


def _finite(value: float) -> float | None:
    """JSON has no NaN: a metric that is undefined (no positives held out) is null."""
    return round(value, 4) if np.isfinite(value) else None


def calibrate(head: Head, scores: F32, labels: list[str], target: float) -> dict[str, float]:
    """Per class: the lowest threshold whose validation precision reaches the target (the
    best recall there). A class that never reaches it keeps the threshold of its best
    precision and is reported, never silently."""
    out: dict[str, float] = {}
    for k, c in enumerate(head.classes):
        truth = np.array([lab == c for lab in labels])
        recall, threshold = recall_at_precision(scores[:, k], truth, target)
        if recall == 0.0:
            precision, _, thr = pr_curve(scores[:, k], truth)
            threshold = float(thr[int(np.argmax(precision))]) if len(thr) else 0.5
        out[c] = threshold
    return out


# --- the whole run ------------------------------------------------------------------


Progress = Callable[[int, int, str], None]


def _quiet(done: int, total: int, what: str) -> None:
    pass


def prepare_clips(
    model: YamnetModel,
    examples: list[Example],
    train_mask: list[bool],
    classes: list[str],
    settings: TrainSettings,
    progress: Progress = _quiet,
) -> tuple[list[Clip], list[Clip]]:
    """(training clips with their augmented copies, validation clips as recorded)."""
    rng = np.random.default_rng(settings.seed)
    waves = []
    for i, ex in enumerate(examples):
        waves.append(audio.load(ex.path))
        progress(i + 1, len(examples), "decode")
    backgrounds = [
        w
        for w, ex, tr in zip(waves, examples, train_mask, strict=True)
        if tr and ex.label == settings.background
    ]
    train: list[Clip] = []
    valid: list[Clip] = []
    for i, (wave, ex, tr) in enumerate(zip(waves, examples, train_mask, strict=True)):
        feats, levels = embed(model, wave)
        clip = Clip(ex.label, ex.group, feats, levels, str(ex.path))
        (train if tr else valid).append(clip)
        if tr:
            copies = settings.augment.copies if ex.label in classes else settings.negative_copies
            others = backgrounds
            for _ in range(copies):
                mixed, clean = augment(wave, others, settings.augment, rng)
                f2, l2 = embed(model, mixed, clean)
                train.append(Clip(ex.label, ex.group, f2, l2, str(ex.path), augmented=True))
        progress(i + 1, len(examples), "embed")
    return train, valid


def check_labels(examples: list[Example], background: str) -> list[str]:
    labels = sorted({e.label for e in examples})
    if background not in labels:
        raise ConfigError(
            f"no clips labelled {background!r} (the background class; labels found: {labels});"
            " set --background"
        )
    classes = [lab for lab in labels if lab != background]
    if not classes:
        raise ConfigError(f"only background clips ({background!r}): nothing to detect")
    for c in classes:
        if not CLASS_NAME.match(c):
            raise ConfigError(
                f"label {c!r}: class names are 1-32 lower-case letters, digits or _ (a-z first)"
            )
    return classes


def train(
    model: YamnetModel,
    examples: list[Example],
    settings: TrainSettings,
    name: str,
    progress: Progress = _quiet,
    extra: list[Example] | None = None,
) -> tuple[Head, dict[str, Any]]:
    """Train on the training groups (and ``extra``), calibrate and report on the
    held-out groups."""
    t0 = time.perf_counter()
    extra = extra or []
    classes = check_labels(examples, settings.background)
    folds = max(2, round(1 / settings.validation))
    fold = group_folds(examples, folds, settings.seed)
    train_mask = [f != 0 for f in fold] + [True] * len(extra)
    train_clips, valid_clips = prepare_clips(
        model, [*examples, *extra], train_mask, classes, settings, progress
    )
    t_embed = time.perf_counter() - t0
    head = fit_head(train_clips, classes, settings, model.model_id, name)
    scores = clip_scores(head, valid_clips)
    labels = [c.label for c in valid_clips]
    head.thresholds = calibrate(head, scores, labels, settings.target_precision)
    head.__post_init__()
    report = evaluate_scores(
        scores, labels, classes, head.thresholds, settings.background, settings.target_precision
    )
    report.update(
        {
            "validation_clips": len(valid_clips),
            "validation_groups": len({c.group for c in valid_clips}),
            "training_clips": sum(not c.augmented for c in train_clips),
            "extra_clips": len(extra),
            "training_copies": sum(c.augmented for c in train_clips),
            "training_windows": int(sum(len(c.features) for c in train_clips)),
            "seconds_embedding": round(t_embed, 1),
            "seconds_total": round(time.perf_counter() - t0, 1),
        }
    )
    head.meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "background": settings.background,
        "target_precision": settings.target_precision,
        "data_sha256": data_hash([*examples, *extra]),
        "clips": len(examples),
        "extra_clips": len(extra),
        "settings": _jsonable(asdict(settings)),
        "method": "MLP on YAMNet embedding + log-odds"
        + (" + embedding delta" if settings.delta else "")
        + "; 2-round MIL, max pooling per clip",
        "validation": {k: v for k, v in report.items() if k != "per_class"}
        | {
            "per_class": {
                c: {k: v for k, v in r.items() if k != "pr_curve"}
                for c, r in report["per_class"].items()
            }
        },
    }
    return head, report


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def print_progress(done: int, total: int, what: str) -> None:
    """Progress on stderr: one rewritten line on a terminal, a line per quarter in logs."""
    tty = sys.stderr.isatty()
    step = max(1, total // (20 if tty else 4))
    if done % step == 0 or done == total:
        end = "\n" if done == total or not tty else "\r"
        print(f"  {what}: {done}/{total} clips", end=end, file=sys.stderr, flush=True)
