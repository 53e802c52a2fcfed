"""VGGish's input features (vggish_input.waveform_to_examples, mel_features.py).

Same STFT and mel matrix as YAMNet's frontend (shared.frontend), so those functions are
reused; VGGish then takes log(mel + 0.01) of the whole clip and cuts it into
non-overlapping 96-frame examples, dropping a trailing partial example.
"""

from __future__ import annotations

import numpy as np

from earwitness.cloud.secondopinion.vggish import params
from earwitness.shared.audio import Waveform
from earwitness.shared.frontend import (
    STFT_HOP,
    STFT_WINDOW,
    FloatArray,
    magnitude_spectrogram,
    mel_matrix,
)

MIN_SAMPLES = (params.NUM_FRAMES - 1) * STFT_HOP + STFT_WINDOW  # 15600: one example


def log_mel(samples: Waveform) -> FloatArray:
    """(frames, 64) log-mel spectrogram of a 16 kHz mono waveform."""
    mel = magnitude_spectrogram(np.asarray(samples, dtype=np.float32)) @ mel_matrix()
    return np.log(mel + np.float32(params.LOG_OFFSET)).astype(np.float32)


def examples(samples: Waveform) -> FloatArray:
    """(n, 96, 64) model inputs. Clips shorter than one example are zero-padded to one
    (the published code would return none, leaving nothing to score)."""
    wave = np.asarray(samples, dtype=np.float32).reshape(-1)
    if wave.size < MIN_SAMPLES:
        wave = np.concatenate([wave, np.zeros(MIN_SAMPLES - wave.size, dtype=np.float32)])
    features = log_mel(wave)
    count = 1 + (features.shape[0] - params.NUM_FRAMES) // params.EXAMPLE_HOP_FRAMES
    starts = np.arange(count) * params.EXAMPLE_HOP_FRAMES
    return np.stack([features[s : s + params.NUM_FRAMES] for s in starts])
