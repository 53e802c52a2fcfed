"""Sound level: dBFS of each window and a running equivalent level (Leq)."""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from earwitness.shared.audio import Waveform

FLOOR_DBFS = -120.0  # digital silence has no level; report a floor instead of -inf


def dbfs(samples: Waveform) -> float:
    """RMS level relative to a full-scale square wave (a full-scale sine reads -3 dBFS)."""
    if samples.size == 0:
        return FLOOR_DBFS
    mean_square = float(np.mean(np.square(samples, dtype=np.float64)))
    if mean_square <= 0:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, 10.0 * math.log10(mean_square))


class RunningLeq:
    """Energy average of the last ``windows`` levels (60 s of 0.48 s hops by default)."""

    def __init__(self, windows: int = 125) -> None:
        self._energies: deque[float] = deque(maxlen=windows)
        self._sum = 0.0

    def add(self, level_dbfs: float) -> float:
        energy = 10.0 ** (level_dbfs / 10.0)
        if len(self._energies) == self._energies.maxlen:
            self._sum -= self._energies[0]
        self._energies.append(energy)
        self._sum += energy
        return self.value

    @property
    def value(self) -> float:
        if not self._energies:
            return FLOOR_DBFS
        mean = max(self._sum / len(self._energies), 1e-12)
        return max(FLOOR_DBFS, 10.0 * math.log10(mean))
