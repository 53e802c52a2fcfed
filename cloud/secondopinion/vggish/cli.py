"""`earwitness vggish convert | train-head | check`: prepare the VGGish backend's files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from earwitness.cloud.secondopinion.vggish import params


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cmd_convert(args: argparse.Namespace) -> int:
    from earwitness.cloud.secondopinion.vggish.convert import convert
    from earwitness.shared.model_registry import model_dir

    convert(args.checkpoint, args.pca, args.out_dir or model_dir(), progress=_say)
    return 0


def _cmd_train_head(args: argparse.Namespace) -> int:
    from earwitness.cloud.secondopinion.vggish import head
    from earwitness.cloud.secondopinion.vggish.runtime import VggishEmbedder
    from earwitness.shared.evaluate import load_mapping
    from earwitness.shared.labels import ClassMap
    from earwitness.shared.model_registry import CLASS_MAP, locate, model_dir

    directory = args.model_dir or model_dir()
    class_map = ClassMap.load(locate(CLASS_MAP, directory))
    embedder = VggishEmbedder(directory, threads=args.threads)
    categories = args.categories.split(",") if args.categories else None

    def progress(done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            _say(f"embedded {done}/{total} clips")

    features, targets, classes = head.esc50_training_set(
        embedder, args.esc50, load_mapping(class_map, args.mapping), class_map, categories, progress
    )
    trained = head.fit(features, targets, classes)
    out = head.save(trained, args.out or directory / params.HEAD_FILE, f"ESC-50 at {args.esc50}")
    _say(
        f"wrote {out}: {len(classes)} classes, {trained.rows} examples,"
        f" training accuracy {trained.train_accuracy:.3f}"
    )
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from earwitness.cloud.secondopinion.backends import UnavailableBackend
    from earwitness.cloud.secondopinion.vggish.backend import VGGish

    try:
        backend = VGGish(args.model_dir)
    except UnavailableBackend as exc:
        print(f"unavailable: {exc}")
        return 1
    print(f"available: {backend.model_id}, {len(backend.head.classes)} head classes")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("vggish", help="prepare the VGGish second-opinion backend's files")
    actions = p.add_subparsers(dest="action", required=True)

    c = actions.add_parser("convert", help="Google's checkpoint + PCA file -> vggish.onnx")
    c.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help=f"vggish_model.ckpt ({params.CHECKPOINT_URL}) or an .npz of its variables",
    )
    c.add_argument(
        "--pca", type=Path, required=True, help=f"vggish_pca_params.npz ({params.PCA_URL})"
    )
    c.add_argument("--out-dir", type=Path, default=None, help="default: the model directory")
    c.set_defaults(handler=_cmd_convert)

    t = actions.add_parser("train-head", help="fit the classifier head on ESC-50 clips")
    t.add_argument("--esc50", type=Path, required=True, help="folder with meta.csv and clips")
    t.add_argument("--mapping", type=Path, default=None, help="category -> AudioSet classes")
    t.add_argument("--categories", default=None, help="comma-separated subset")
    t.add_argument("--model-dir", type=Path, default=None)
    t.add_argument(
        "--out", type=Path, default=None, help=f"default: <model dir>/{params.HEAD_FILE}"
    )
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(handler=_cmd_train_head)

    k = actions.add_parser("check", help="is the backend usable here? (exit 1 if not)")
    k.add_argument("--model-dir", type=Path, default=None)
    k.set_defaults(handler=_cmd_check)
