"""Subcommands built on shared/ alone: classify, eval, models, synth."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from earwitness.shared.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, EarwitnessError


def _model_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="directory holding model files (default: $EARWITNESS_MODEL_DIR or the XDG cache)",
    )


def _cmd_classify(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from earwitness.shared import audio, synth
    from earwitness.shared.classify import (
        LONG_FILE_S,
        FileResult,
        LongFile,
        classify_stream,
        classify_waveform,
        iter_decoded,
    )
    from earwitness.shared.labels import ClassMap
    from earwitness.shared.model_registry import CLASS_MAP, get_spec, locate
    from earwitness.shared.runner import YamnetModel

    head = None
    if args.head is not None:
        from earwitness.shared.heads import load_head

        head = load_head(args.head)
    model = YamnetModel.load(
        args.model, args.model_dir, threads=args.threads, embeddings=head is not None
    )
    if head is not None:
        head.check_model(model.model_id)
    class_map = ClassMap.load(locate(CLASS_MAP, args.model_dir))
    _ = get_spec(args.model)
    results: list[FileResult] = []
    if args.generate:
        wave = synth.make(args.generate)
        results.append(
            classify_waveform(model, class_map, wave, f"<{args.generate}>", args.top, head)
        )
    files = audio.find_audio_files([Path(p) for p in args.paths])
    if not files and not args.generate:
        print("error: no audio files found in the given paths", file=sys.stderr)
        return EXIT_USAGE
    bar = tqdm(
        total=len(files), unit="file", disable=None if len(files) > 1 else True, file=sys.stderr
    )
    for path, decoded in iter_decoded(files, args.decode_threads, LONG_FILE_S):
        bar.update(1)
        if isinstance(decoded, LongFile):
            try:
                with tqdm(
                    total=round(decoded.seconds),
                    unit="s",
                    desc=path.name[:40],
                    disable=None,
                    file=sys.stderr,
                    leave=False,
                ) as seconds:
                    results.append(
                        classify_stream(
                            model,
                            class_map,
                            audio.stream(path),
                            str(path),
                            args.top,
                            head,
                            on_progress=seconds.update,
                        )
                    )
            except EarwitnessError as exc:
                results.append(FileResult(path=str(path), duration_s=0.0, error=str(exc)))
                bar.write(f"error: {exc}", file=sys.stderr)
            continue
        if isinstance(decoded, EarwitnessError):
            results.append(FileResult(path=str(path), duration_s=0.0, error=str(decoded)))
            bar.write(f"error: {decoded}", file=sys.stderr)
            continue
        results.append(classify_waveform(model, class_map, decoded, str(path), args.top, head))
    bar.close()
    failed = [r for r in results if r.error is not None]
    if args.json:
        json.dump(
            {"model": model.model_id, "files": [r.as_dict() for r in results]}
            | ({"head": head.head_id} if head is not None else {}),
            sys.stdout,
            indent=None if args.compact else 2,
        )
        print()
    else:
        for r in results:
            if r.error is not None:
                continue
            print(f"{r.path}  ({r.duration_s:.2f} s, {len(r.windows)} windows)")
            if args.windows:
                for start, top in r.windows:
                    labels = ", ".join(f"{lbl.name} {lbl.score:.2f}" for lbl in top)
                    print(f"  {start:7.2f}s  {labels}")
            print("  mean: " + ", ".join(f"{lbl.name} {lbl.score:.2f}" for lbl in r.summary_mean))
            print("  max:  " + ", ".join(f"{lbl.name} {lbl.score:.2f}" for lbl in r.summary_max))
            if r.custom is not None:
                scores = ", ".join(f"{c} {v:.2f}" for c, v in r.custom.file_scores.items())
                found = ", ".join(r.custom.detected) or "nothing"
                print(f"  custom ({r.custom.head_id}): {scores}; detected: {found}")
    if failed:
        print(f"{len(failed)} of {len(results)} files failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from earwitness.shared import audio
    from earwitness.shared.evaluate import evaluate, load_mapping, read_meta
    from earwitness.shared.labels import ClassMap
    from earwitness.shared.model_registry import CLASS_MAP, locate
    from earwitness.shared.runner import YamnetModel

    model = YamnetModel.load(args.model, args.model_dir, threads=args.threads, embeddings=False)
    class_map = ClassMap.load(locate(CLASS_MAP, args.model_dir))
    mapping = load_mapping(class_map, args.mapping)
    examples = read_meta(args.directory)

    def score(path: Path):  # type: ignore[no-untyped-def]
        import numpy as np

        scores = np.stack([r.scores for r in model.classify(audio.load(path))])
        return scores.mean(axis=0), scores.max(axis=0)

    with tqdm(total=len(examples), unit="clip", disable=None, file=sys.stderr) as bar:
        reports = evaluate(examples, score, mapping, on_progress=lambda: bar.update(1))
    out: dict[str, Any] = {"model": model.model_id, "directory": str(args.directory)}
    out.update({name: r.as_dict() for name, r in reports.items()})
    best = max(reports.values(), key=lambda r: r.accuracy)
    out["accuracy"] = round(best.accuracy, 4)
    out["pooling"] = best.pooling
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
    else:
        for r in reports.values():
            print(f"{r.pooling:>4} pooling: {r.correct}/{r.total} = {r.accuracy:.3f}")
        print("per class (best pooling):")
        for cls, stats in out[best.pooling]["per_class"].items():
            print(f"  {cls:<18} {stats['correct']}/{stats['total']}")
        print("top confusions:")
        for c in out[best.pooling]["top_confusions"][:10]:
            print(f"  {c['truth']} -> {c['predicted']} x{c['count']}")
    return EXIT_FAILED if best.failed else EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from earwitness.shared import model_registry as models

    directory = args.model_dir or models.model_dir()
    if args.action == "list":
        for spec in models.REGISTRY.values():
            present = (directory / spec.filename).is_file()
            state = "present" if present else "missing"
            print(f"{spec.name:<18} {spec.kind:<9} {spec.size:>9} B  {state:<8} {spec.description}")
        print(f"model directory: {directory}")
        return EXIT_OK
    names = args.names or [models.DEFAULT_MODEL, models.CLASS_MAP]
    status = EXIT_OK
    for name in names:
        try:
            if args.action == "fetch":
                path = models.fetch(name, directory, url=args.url, progress=None)
            else:
                path = models.verify(models.get_spec(name), directory)
            print(f"{name}: ok ({path})")
        except EarwitnessError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
    return status


def _cmd_synth(args: argparse.Namespace) -> int:
    import soundfile as sf

    from earwitness.shared import synth
    from earwitness.shared.audio import SAMPLE_RATE

    sf.write(args.output, synth.make(args.kind, args.seconds), SAMPLE_RATE)
    print(f"wrote {args.output}")
    return EXIT_OK


def register(sub: Any) -> None:
    """The tools every layer shares: classify, eval, models, synth."""
    p = sub.add_parser("classify", help="classify audio files or directories")
    p.add_argument("paths", nargs="*", help="audio files or directories (searched recursively)")
    p.add_argument(
        "--generate",
        choices=["siren", "beeps", "noise", "tone", "silence", "impacts"],
        help="also classify a sound the project synthesizes (no files needed)",
    )
    p.add_argument("--model", default="yamnet-int8", help="registry name of the model")
    p.add_argument(
        "--head",
        type=Path,
        default=None,
        help="a custom head (earwitness train): add its scores and decisions",
    )
    p.add_argument("--top", type=int, default=3, help="labels per window and summary")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument(
        "--decode-threads",
        type=int,
        default=1,
        help="threads decoding the next files while the model runs (0: decode inline)",
    )
    p.add_argument(
        "--windows", action="store_true", help="print every window, not only the summary"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    p.add_argument("--compact", action="store_true", help="with --json: one line")
    _model_dir_arg(p)
    p.set_defaults(handler=_cmd_classify)

    p = sub.add_parser("eval", help="zero-shot accuracy on an ESC-50-style folder")
    p.add_argument("directory", type=Path)
    p.add_argument("--model", default="yamnet-int8")
    p.add_argument(
        "--mapping",
        type=Path,
        default=None,
        help="category -> AudioSet classes YAML (default: the one shipped)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    _model_dir_arg(p)
    p.set_defaults(handler=_cmd_eval)

    p = sub.add_parser("models", help="list, fetch or verify model files")
    p.add_argument("action", choices=["list", "fetch", "verify"])
    p.add_argument(
        "names", nargs="*", help="registry names (default: the edge model and class map)"
    )
    p.add_argument("--url", default=None, help="fetch from this URL instead of the registry's")
    _model_dir_arg(p)
    p.set_defaults(handler=_cmd_models)

    p = sub.add_parser("synth", help="write a generated test sound to a WAV file")
    p.add_argument("kind", choices=["siren", "beeps", "noise", "tone", "silence", "impacts"])
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.set_defaults(handler=_cmd_synth)
