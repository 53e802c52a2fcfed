"""`earwitness train` and `earwitness eval-head`."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from earwitness.shared.errors import EXIT_FAILED, EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from earwitness.cloud.heads.dataset import parse_relabel, read_dataset, read_extra
    from earwitness.cloud.heads.report import write_report
    from earwitness.cloud.heads.train import TrainSettings, check_labels, print_progress, train
    from earwitness.shared.runner import YamnetModel

    settings = TrainSettings(
        background=args.background,
        target_precision=args.target_precision,
        validation=args.validation,
        seed=args.seed,
        delta=args.delta,
    )
    relabel = parse_relabel(args.map)
    examples = read_dataset(args.directory, relabel)
    print(f"{len(examples)} clips in {args.directory}", file=sys.stderr)
    classes = check_labels(examples, settings.background)
    extra = []
    for directory in args.extra:
        more = read_extra(directory, classes, settings.background, relabel)
        counts = Counter(e.label for e in more)
        print(
            f"{len(more)} training-only clips in {directory}: "
            + ", ".join(f"{n} {label}" for label, n in sorted(counts.items())),
            file=sys.stderr,
        )
        extra.extend(more)
    if not extra:
        print(
            "note: no --extra corpus: the head meets only these background clips in training;"
            " with a general corpus (e.g. ESC-50) false alarms on unseen sounds fell 8-fold"
            " (docs/heads.md)",
            file=sys.stderr,
        )
    model = YamnetModel.load(args.model, args.model_dir)
    head, report = train(
        model, examples, settings, args.name or args.out.stem, print_progress, extra
    )
    sha = head.save(args.out)
    report["target_precision"] = settings.target_precision
    report_dir = args.report or args.out.with_name(args.out.stem + "-report")
    files = write_report(report, report_dir)
    _print_report(report, head.thresholds)
    print(f"head {head.head_id} written to {args.out} (sha256 {sha})")
    print(f"report: {', '.join(str(f) for f in files)}")
    missed = [
        c
        for c, r in report["per_class"].items()
        if (r["precision"] or 0) < settings.target_precision
    ]
    if missed:
        print(
            f"warning: {', '.join(missed)} did not reach precision {settings.target_precision}"
            " on the validation groups: collect more (and harder) examples",
            file=sys.stderr,
        )
    return EXIT_OK


def _print_report(report: dict[str, Any], thresholds: dict[str, float]) -> None:
    if "validation_clips" in report:  # a training run's report (eval-head names its folder)
        print(
            f"validation: {report['validation_clips']} clips in"
            f" {report['validation_groups']} held-out groups"
        )
    columns = ("clips", "thresh", "prec", "recall", "R@P95", "AUC")
    print(f"  {'class':<16} " + " ".join(f"{c:>6}" for c in columns))
    for c, r in report["per_class"].items():

        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        print(
            f"  {c:<16} {r['clips']:>6} {thresholds[c]:>6.3f} {fmt(r['precision']):>6}"
            f" {fmt(r['recall']):>6} {fmt(r['recall_at_p95']):>6} {fmt(r['auc']):>6}"
        )
    labels = report["confusion"]["labels"]
    print("  confusion (rows: true, columns: predicted): " + " ".join(labels))
    for lab, row in zip(labels, report["confusion"]["matrix"], strict=True):
        print(f"    {lab:<16} " + " ".join(f"{n:>5}" for n in row))


def _cmd_eval_head(args: argparse.Namespace) -> int:
    import numpy as np

    from earwitness.cloud.heads.dataset import parse_relabel, read_dataset
    from earwitness.cloud.heads.train import embed, evaluate_scores, print_progress
    from earwitness.shared import audio
    from earwitness.shared.errors import AudioError
    from earwitness.shared.heads import load_head
    from earwitness.shared.runner import YamnetModel

    head = load_head(args.head)
    model = YamnetModel.load(head.model_id.split("@")[0], args.model_dir)
    head.check_model(model.model_id)
    background = args.background or head.meta.get("background", "negative")
    examples = read_dataset(args.directory, parse_relabel(args.map))
    scores, labels, failed = [], [], 0
    for i, ex in enumerate(examples, start=1):
        try:
            feats, _ = embed(model, audio.load(ex.path))
        except AudioError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        scores.append(head.scores(feats).max(axis=0))
        labels.append(ex.label)
        print_progress(i, len(examples), "scored")
    report = evaluate_scores(
        np.stack(scores).astype(np.float32), labels, head.classes, head.thresholds, background, 0.95
    )
    report |= {"head": head.head_id, "directory": str(args.directory), "clips": len(labels)}
    if args.json:
        for r in report["per_class"].values():
            r.pop("pr_curve")
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        print(f"head {head.head_id} on {args.directory}: {len(labels)} clips")
        _print_report(report, head.thresholds)
    return EXIT_FAILED if failed else EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser(
        "train", help="train a custom head (new classes) on YAMNet embeddings from labelled clips"
    )
    p.add_argument(
        "directory",
        type=Path,
        help="a folder per class, or a folder with meta.csv (filename, label[, group_id])",
    )
    p.add_argument("--out", type=Path, required=True, help="head file to write (JSON)")
    p.add_argument("--name", default=None, help="head name (default: the file's stem)")
    p.add_argument(
        "--background", default="negative", help="label of the background (no event) class"
    )
    p.add_argument(
        "--target-precision",
        type=float,
        default=0.95,
        help="thresholds reach this precision on the held-out groups",
    )
    p.add_argument(
        "--validation", type=float, default=0.2, help="share of groups held out for calibration"
    )
    p.add_argument(
        "--extra",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="more training clips, never held out (e.g. ESC-50): labels that are not one of"
        " DIRECTORY's classes count as background; repeatable",
    )
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="rename a label when reading (e.g. glass_breaking=glass_break); repeatable",
    )
    p.add_argument("--seed", type=int, default=0, help="augmentation, split and training seed")
    p.add_argument(
        "--delta",
        action="store_true",
        help="also read each window's embedding change from the previous window (format 3:"
        " better recall on the distress folds, more false alarms on unseen clips; too large"
        " to ship inline, use --head-url)",
    )
    p.add_argument("--report", type=Path, default=None, help="report folder (default: OUT-report)")
    p.add_argument("--model", default="yamnet-int8")
    p.add_argument("--model-dir", type=Path, default=None)
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("eval-head", help="precision, recall and AUC of a head on labelled clips")
    p.add_argument("head", type=Path)
    p.add_argument("directory", type=Path, help="same layouts as `earwitness train`")
    p.add_argument("--background", default=None, help="default: the head's background label")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FROM=TO",
        help="rename a label when reading (e.g. glass_breaking=glass_break); labels that are"
        " not the head's classes count as background",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument("--model-dir", type=Path, default=None)
    p.set_defaults(handler=_cmd_eval_head)
