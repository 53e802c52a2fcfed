"""Cost of the log-mel frontend per 0.48 s hop (target <= 0.2 ms), streamed in 20 ms chunks."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench._common import machine
from earwitness.shared.frontend import PATCH_HOP_SAMPLES, StreamingFrontend

SECONDS = 600  # ten minutes of audio


def main() -> None:
    print(f"machine: {machine()}")
    wave = (0.1 * np.random.default_rng(0).standard_normal(SECONDS * 16000)).astype(np.float32)
    for chunk in (320, 16000, wave.size):
        fe = StreamingFrontend()
        t0 = time.perf_counter()
        count = 0
        for start in range(0, wave.size, chunk):
            count += len(fe.push(wave[start : start + chunk]))
        count += len(fe.flush())
        elapsed = time.perf_counter() - t0
        hops = wave.size / PATCH_HOP_SAMPLES
        print(
            f"chunk {chunk:>8} samples: {elapsed / hops * 1000:.4f} ms per 0.48 s hop"
            f" ({count} patches from {SECONDS} s, {SECONDS / elapsed:.0f}x real time)"
        )


if __name__ == "__main__":
    main()
