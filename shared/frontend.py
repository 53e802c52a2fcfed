"""YAMNet's log-mel frontend (tensorflow/models research/audioset/yamnet), in numpy.

The same code path serves a whole file and a live stream: samples are pushed in chunks
of any size and frames are always computed in fixed groups of one patch hop (48 frames),
so the floating-point operations, and therefore the results, are identical however the
audio was chunked.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import scipy.fft

from earwitness.shared.audio import SAMPLE_RATE, Waveform

STFT_WINDOW = 400  # 25 ms at 16 kHz
STFT_HOP = 160  # 10 ms
FFT_LENGTH = 512  # next power of two above the window
MEL_BANDS = 64
MEL_LOW_HZ = 125.0
MEL_HIGH_HZ = 7500.0
LOG_OFFSET = 0.001  # log(mel + 0.001): YAMNet's stabiliser, not VGGish's 0.01
PATCH_FRAMES = 96  # 0.96 s of frames per model input
PATCH_HOP_FRAMES = 48  # 0.48 s between patches
PATCH_SAMPLES = (PATCH_FRAMES - 1) * STFT_HOP + STFT_WINDOW  # 15600 = 0.975 s
PATCH_HOP_SAMPLES = PATCH_HOP_FRAMES * STFT_HOP  # 7680 = 0.48 s
GROUP_SAMPLES = (PATCH_HOP_FRAMES - 1) * STFT_HOP + STFT_WINDOW  # samples for 48 frames
PATCH_SECONDS = PATCH_FRAMES * STFT_HOP / SAMPLE_RATE  # 0.96

FloatArray = npt.NDArray[np.float32]


def hertz_to_mel(hz: npt.NDArray[np.float64] | float) -> npt.NDArray[np.float64]:
    """HTK mel scale, as tf.signal uses."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@lru_cache(maxsize=4)
def mel_matrix(
    num_mel_bins: int = MEL_BANDS,
    num_spectrogram_bins: int = FFT_LENGTH // 2 + 1,
    sample_rate: int = SAMPLE_RATE,
    lower_hz: float = MEL_LOW_HZ,
    upper_hz: float = MEL_HIGH_HZ,
) -> FloatArray:
    """tf.signal.linear_to_mel_weight_matrix: triangles on the HTK scale, DC bin unweighted."""
    nyquist = sample_rate / 2.0
    linear_hz = np.linspace(0.0, nyquist, num_spectrogram_bins)[1:]
    bins_mel = hertz_to_mel(linear_hz)[:, None]
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    lower_slopes = (bins_mel - lower) / (center - lower)
    upper_slopes = (upper - bins_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(lower_slopes, upper_slopes))
    weights = np.vstack([np.zeros((1, num_mel_bins)), weights])
    return weights.astype(np.float32)


@lru_cache(maxsize=4)
def periodic_hann(length: int = STFT_WINDOW) -> FloatArray:
    n = np.arange(length, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)).astype(np.float32)


def frame(samples: FloatArray, window: int = STFT_WINDOW, hop: int = STFT_HOP) -> FloatArray:
    """Overlapping frames as a strided view (no copy); trailing samples that fill no frame drop."""
    count = 1 + (samples.shape[0] - window) // hop
    if count <= 0:
        return np.zeros((0, window), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(samples, window)[::hop]
    return view[:count]


def magnitude_spectrogram(samples: FloatArray) -> FloatArray:
    """|rfft| of Hann-windowed 25 ms frames zero-padded to 512: shape (frames, 257)."""
    frames = frame(samples) * periodic_hann()
    # scipy's pocketfft keeps float32 and is ~3x faster than numpy's here; one worker so
    # the frontend never competes with inference for the second core.
    spectrum = scipy.fft.rfft(frames, n=FFT_LENGTH, axis=1, workers=1)
    return np.abs(spectrum).astype(np.float32, copy=False)


def log_mel(magnitude: FloatArray) -> FloatArray:
    mel = magnitude @ mel_matrix()
    return np.log(mel + np.float32(LOG_OFFSET)).astype(np.float32)


def padded_length(num_samples: int) -> int:
    """Length the reference pads to: at least one patch, then a whole number of patch hops."""
    if num_samples <= PATCH_SAMPLES:
        return PATCH_SAMPLES
    extra = num_samples - PATCH_SAMPLES
    hops = -(-extra // PATCH_HOP_SAMPLES)
    return PATCH_SAMPLES + hops * PATCH_HOP_SAMPLES


@dataclass(frozen=True)
class Patch:
    """One model input: 96x64 log-mel frames starting at ``start_sample`` of the stream."""

    index: int
    start_sample: int
    features: FloatArray

    @property
    def start_seconds(self) -> float:
        return self.start_sample / SAMPLE_RATE


BUFFER_SAMPLES = 8 * PATCH_HOP_SAMPLES  # holds several hops so draining moves memory rarely


class StreamingFrontend:
    """Push samples, get patches. Whole-file and chunked input give bit-identical patches."""

    def __init__(self) -> None:
        self._buf = np.zeros(BUFFER_SAMPLES, dtype=np.float32)
        self._fill = 0
        self._prev_group: FloatArray | None = None  # the last 48-frame log-mel group
        self._patch_index = 0
        self._total = 0

    @property
    def samples_seen(self) -> int:
        return self._total

    def push(self, samples: Waveform) -> list[Patch]:
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._total += chunk.size
        out: list[Patch] = []
        offset = 0
        while offset < chunk.size:
            take = min(chunk.size - offset, BUFFER_SAMPLES - self._fill)
            self._buf[self._fill : self._fill + take] = chunk[offset : offset + take]
            self._fill += take
            offset += take
            self._drain(out)
        return out

    def flush(self) -> list[Patch]:
        """Zero-pad the tail like the reference and emit the remaining patches."""
        if self._total == 0:
            return []
        pad = padded_length(self._total) - self._total
        return self.push(np.zeros(pad, dtype=np.float32)) if pad else []

    def _drain(self, out: list[Patch]) -> None:
        start = 0
        while start + GROUP_SAMPLES <= self._fill:
            group = log_mel(magnitude_spectrogram(self._buf[start : start + GROUP_SAMPLES]))
            start += PATCH_HOP_SAMPLES
            if self._prev_group is not None:
                out.append(
                    Patch(
                        index=self._patch_index,
                        start_sample=self._patch_index * PATCH_HOP_SAMPLES,
                        features=np.concatenate([self._prev_group, group]),
                    )
                )
                self._patch_index += 1
            self._prev_group = group
        if start:
            remaining = self._fill - start
            self._buf[:remaining] = self._buf[start : self._fill]
            self._fill = remaining


def patches(waveform: Waveform) -> list[Patch]:
    """All patches of a complete waveform, padded as the reference does."""
    fe = StreamingFrontend()
    out = fe.push(waveform)
    out.extend(fe.flush())
    return out
