"""Custom heads on ../shared/audio/distress: 5-fold group cross-validation and train time.

Each fold trains on four fifths of the *groups* (clips cut from one recording never sit
on both sides), with augmentation, and scores the held-out clips (max over windows).
Prints per fold and pooled: recall at precision 0.95 and AUC per class. Then times one
full `train` run (what `earwitness train` does) on one core.
Targets (issue 15): recall >= 0.95 at precision >= 0.95 per class; training <= 3 min.

    .venv/bin/python bench/bench_heads.py [--dir DIR] [--folds 5] [--seed 0]
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
from earwitness.cloud.heads.dataset import group_folds, read_dataset
from earwitness.cloud.heads.train import (
    TrainSettings,
    auc,
    check_labels,
    clip_scores,
    fit_head,
    prepare_clips,
    recall_at_precision,
    train,
)
from earwitness.shared.runner import YamnetModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=SHARED / "audio" / "distress")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=0, help="list the N hardest clips per class")
    parser.add_argument("--cv-only", action="store_true")
    parser.add_argument("--epochs", type=int, default=TrainSettings.epochs)
    parser.add_argument("--l2", type=float, default=TrainSettings.l2)
    parser.add_argument("--hidden", type=int, default=TrainSettings.hidden)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    model = YamnetModel.load("yamnet-int8", MODELS)
    examples = read_dataset(args.dir)
    settings = TrainSettings(seed=args.seed, epochs=args.epochs, l2=args.l2, hidden=args.hidden)
    classes = check_labels(examples, settings.background)
    fold = group_folds(examples, args.folds, args.seed)
    labels = np.array([e.label for e in examples])
    pooled = np.zeros((len(examples), len(classes)), np.float32)
    for k in range(args.folds):
        t = time.perf_counter()
        train_mask = [f != k for f in fold]
        train_clips, valid_clips = prepare_clips(model, examples, train_mask, classes, settings)
        head = fit_head(train_clips, classes, settings, model.model_id, "cv")
        scores = clip_scores(head, valid_clips)
        held = np.array([not m for m in train_mask])
        pooled[held] = scores
        parts = []
        for ci, c in enumerate(classes):
            truth = labels[held] == c
            r, _ = recall_at_precision(scores[:, ci], truth, 0.95)
            parts.append(
                f"{c}: {int(truth.sum())} clips, R@P95 {r:.3f}, AUC {auc(scores[:, ci], truth):.3f}"
            )
        print(f"fold {k}: " + "; ".join(parts) + f" ({time.perf_counter() - t:.0f} s)", flush=True)
    for ci, c in enumerate(classes):
        truth = labels == c
        r, _ = recall_at_precision(pooled[:, ci], truth, 0.95)
        area = auc(pooled[:, ci], truth)
        print(f"pooled {c}: {int(truth.sum())} clips, R@P95 {r:.3f}, AUC {area:.3f}")
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
    head, report = train(model, examples, settings, "distress")
    print(
        f"one full train run: {time.perf_counter() - t:.1f} s"
        f" ({report['training_windows']} training windows)"
    )
    feats = np.random.default_rng(0).normal(size=(1, 1545)).astype(np.float32)
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        head.scores(feats)
    print(f"head per window: {(time.perf_counter() - t) / n * 1000:.4f} ms")


if __name__ == "__main__":
    main()
