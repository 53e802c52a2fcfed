"""Per-patch latency of the YAMNet models on one thread (target: int8 <= 1 ms)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import MODELS, machine, percentile
from earwitness.shared.runner import YamnetModel

N = 2000


def main() -> None:
    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    features = rng.normal(-4, 2, (96, 64)).astype(np.float32)
    wave = (0.1 * rng.standard_normal(15600)).astype(np.float32)
    for name, embeddings in (
        ("yamnet-int8", False),
        ("yamnet-int8", True),
        ("yamnet-waveform", False),
    ):
        model = YamnetModel.load(name, MODELS, threads=1, embeddings=embeddings)
        run = model.run_patch if name == "yamnet-int8" else model.run_waveform
        arg = features if name == "yamnet-int8" else wave
        for _ in range(50):
            run(arg)
        times = []
        for _ in range(N):
            t0 = time.perf_counter()
            run(arg)
            times.append((time.perf_counter() - t0) * 1000)
        label = f"{name}{' +embedding' if embeddings else ''}"
        print(
            f"{label:<24} mean {np.mean(times):.3f} ms  p50 {percentile(times, 50):.3f} ms"
            f"  p95 {percentile(times, 95):.3f} ms  ({N} windows, 1 thread)"
        )


if __name__ == "__main__":
    main()
