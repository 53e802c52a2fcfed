"""End-to-end `classify` over the ESC-50 clips: decode + resample + frontend + inference.

Targets: >= 500x real time on one thread; peak RSS of the `earwitness classify` process
under 200 MB (measured on a child process so this script's own memory is not counted).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import ESC50, MODELS, machine
from earwitness.shared import audio
from earwitness.shared.classify import classify_file, iter_decoded
from earwitness.shared.labels import ClassMap
from earwitness.shared.runner import YamnetModel


def main() -> None:
    print(f"machine: {machine()}")
    files = sorted(ESC50.glob("*.flac"))
    seconds = sum(sf.info(str(f)).duration for f in files)
    model = YamnetModel.load("yamnet-int8", MODELS, threads=1, embeddings=False)
    class_map = ClassMap.load(MODELS / "yamnet_class_map.csv")
    classify_file(model, class_map, files[0], 3)  # warm-up
    stages = {"decode+resample": 0.0, "frontend+inference": 0.0}
    t0 = time.perf_counter()
    for f in files:
        t = time.perf_counter()
        wave = audio.load(f)
        stages["decode+resample"] += time.perf_counter() - t
        t = time.perf_counter()
        model.classify(wave)
        stages["frontend+inference"] += time.perf_counter() - t
    elapsed = time.perf_counter() - t0
    print(
        f"in-process: {len(files)} files, {seconds:.0f} s of audio in {elapsed:.2f} s"
        f" = {seconds / elapsed:.0f}x real time (1 thread)"
    )
    for name, spent in stages.items():
        print(f"  {name:<20} {spent:.2f} s ({100 * spent / elapsed:.0f}%)")

    for threads in (1,):
        t0 = time.perf_counter()
        for _path, wave in iter_decoded(files, threads):
            assert not isinstance(wave, Exception), wave
            model.classify(wave)
        elapsed = time.perf_counter() - t0
        print(
            f"in-process, decoding overlapped in {threads} extra thread: {elapsed:.2f} s"
            f" = {seconds / elapsed:.0f}x real time (inference on 1 thread)"
        )

    env = {**os.environ, "EARWITNESS_MODEL_DIR": str(MODELS)}
    for decode_threads in (0, 1):
        t = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "earwitness",
                "classify",
                str(ESC50),
                "--json",
                "--compact",
                "--decode-threads",
                str(decode_threads),
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        wall = time.perf_counter() - t
        rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        n = len(json.loads(proc.stdout)["files"])
        mode = "one thread" if decode_threads == 0 else "decoding overlapped in 1 extra thread"
        print(
            f"`earwitness classify {ESC50.name}/ --decode-threads {decode_threads}` ({mode}):"
            f" {n} files in {wall:.2f} s wall incl. start-up = {seconds / wall:.0f}x real time;"
            f" peak RSS {rss_mb:.0f} MB"
        )


if __name__ == "__main__":
    main()
