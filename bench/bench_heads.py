"""Custom heads on ../shared/audio/distress: 5-fold group cross-validation and train time.

Each fold trains on four fifths of the *groups* (clips cut from one recording never sit
on both sides), with augmentation, and scores the held-out clips (max over windows).
ESC-50 (../shared/audio/esc50, its glass_breaking as glass_break, its other 49 classes
as background) joins every fold's training and is never scored, as `earwitness train
--extra` does; `--no-extra` leaves it out. Prints per fold, the mean over folds (each
fold's head has its own threshold, as a deployed head does) and pooled (all folds' scores
ranked together: five different heads, a stricter and less meaningful number): recall at
precision 0.95 and AUC per class. Then times one full `train` run on one core, and
counts false alarms on recordings from another corpus: ESC-50 split in two halves (every
other clip of each category), heads trained on the distress clips alone and with the
first half, both run at their calibrated thresholds on the second half.
Targets (issue 15): recall >= 0.95 at precision >= 0.95 per class; training <= 3 min.

    .venv/bin/python bench/bench_heads.py [--dir DIR] [--folds 5] [--seed 0] [--no-extra]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # "one core": numpy's BLAS too
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import MODELS, SHARED, machine
from earwitness.cloud.heads.dataset import (
    Example,
    as_extra,
    group_folds,
    read_dataset,
    read_extra,
)
from earwitness.cloud.heads.train import (
    TrainSettings,
    auc,
    check_labels,
    clip_scores,
    embed,
    fit_head,
    prepare_clips,
    recall_at_precision,
    train,
)
from earwitness.shared import audio
from earwitness.shared.runner import YamnetModel

ESC50_LABELS = {"glass_breaking": "glass_break"}  # ESC-50's name for our class


def unseen_false_alarms(
    model: YamnetModel, examples: list[Example], corpus: Path, settings: TrainSettings
) -> None:
    """Alarms raised on the second half of ``corpus`` by heads trained without it and
    with its first half (a clip of a head class counts only for the other class)."""
    classes = check_labels(examples, settings.background)
    clips = read_dataset(corpus, ESC50_LABELS)
    seen: dict[str, int] = {}
    halves: tuple[list[Example], list[Example]] = ([], [])
    for ex in sorted(clips, key=lambda e: e.path.name):
        halves[seen.get(ex.label, 0) % 2].append(ex)
        seen[ex.label] = seen.get(ex.label, 0) + 1
    first = as_extra(halves[0], classes, settings.background, f"{corpus.name}-half-1")
    second = halves[1]
    feats = [embed(model, audio.load(e.path))[0] for e in second]
    for name, extra in (("distress only", []), (f"+ {len(first)} clips of half 1", first)):
        head, _ = train(model, examples, settings, "unseen", extra=extra)
        alarms, hits = [], 0
        for ex, f in zip(second, feats, strict=True):
            decided = head.decisions(head.scores(f).max(axis=0))
            for c, on in zip(head.classes, decided, strict=True):
                if on and c == ex.label:
                    hits += 1
                elif on:
                    alarms.append(f"{c}:{ex.label}")
        positives = sum(e.label in classes for e in second)
        print(
            f"unseen {corpus.name} half 2 ({len(second)} clips, {positives} of a head class),"
            f" head trained on {name}: {len(alarms)} false alarms, {hits}/{positives} found;"
            f" {sorted(alarms)}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=SHARED / "audio" / "distress")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=0, help="list the N hardest clips per class")
    parser.add_argument("--cv-only", action="store_true")
    parser.add_argument("--extra", type=Path, default=SHARED / "audio" / "esc50")
    parser.add_argument("--no-extra", action="store_true")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--l2", type=float, default=TrainSettings.l2)
    parser.add_argument("--hidden", type=int, default=TrainSettings.hidden)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    model = YamnetModel.load("yamnet-int8", MODELS)
    examples = read_dataset(args.dir)
    settings = TrainSettings(seed=args.seed, epochs=args.epochs, l2=args.l2, hidden=args.hidden)
    classes = check_labels(examples, settings.background)
    extra: list[Example] = []
    if not args.no_extra:
        extra = read_extra(args.extra, classes, settings.background, ESC50_LABELS)
        print(f"training-only extra: {len(extra)} clips from {args.extra}")
    fold = group_folds(examples, args.folds, args.seed)
    labels = np.array([e.label for e in examples])
    pooled = np.zeros((len(examples), len(classes)), np.float32)
    per_fold: dict[str, list[float]] = {c: [] for c in classes}
    for k in range(args.folds):
        t = time.perf_counter()
        train_mask = [f != k for f in fold] + [True] * len(extra)
        train_clips, valid_clips = prepare_clips(
            model, [*examples, *extra], train_mask, classes, settings
        )
        head = fit_head(train_clips, classes, settings, model.model_id, "cv")
        scores = clip_scores(head, valid_clips)
        held = np.array([f == k for f in fold])
        pooled[held] = scores
        parts = []
        for ci, c in enumerate(classes):
            truth = labels[held] == c
            r, _ = recall_at_precision(scores[:, ci], truth, 0.95)
            per_fold[c].append(r)
            parts.append(
                f"{c}: {int(truth.sum())} clips, R@P95 {r:.3f}, AUC {auc(scores[:, ci], truth):.3f}"
            )
        print(f"fold {k}: " + "; ".join(parts) + f" ({time.perf_counter() - t:.0f} s)", flush=True)
    for ci, c in enumerate(classes):
        truth = labels == c
        r, _ = recall_at_precision(pooled[:, ci], truth, 0.95)
        area = auc(pooled[:, ci], truth)
        folds = per_fold[c]
        print(
            f"{c}: R@P95 mean over folds {np.mean(folds):.3f} (lowest {min(folds):.3f});"
            f" pooled {int(truth.sum())} clips, R@P95 {r:.3f}, AUC {area:.3f}"
        )
        if args.show:
            top = [i for i in np.argsort(-pooled[:, ci]) if not truth[i]][: args.show]
            print(
                "  highest others:",
                [(examples[i].path.name[:40], round(float(pooled[i, ci]), 3)) for i in top],
            )
            low = [i for i in np.argsort(pooled[:, ci]) if truth[i]][: args.show]
            print(
                "  lowest positives:",
                [(examples[i].path.name[:40], round(float(pooled[i, ci]), 3)) for i in low],
            )
    if args.cv_only:
        return
    t = time.perf_counter()
    head, report = train(model, examples, settings, "distress", extra=extra)
    print(
        f"one full train run: {time.perf_counter() - t:.1f} s"
        f" ({report['training_windows']} training windows)"
    )
    print(f"head: {head.arrays['w1'].shape[1]} hidden units")
    feats = np.random.default_rng(0).normal(size=(1, 1545)).astype(np.float32)
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        head.scores(feats, feats)  # a window and its predecessor, as on the device
    print(f"head per window: {(time.perf_counter() - t) / n * 1000:.4f} ms")
    if not args.no_extra:
        unseen_false_alarms(model, examples, args.extra, settings)


if __name__ == "__main__":
    main()
