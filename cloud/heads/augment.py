"""Seeded audio augmentation: time shift, gain, pitch shift, time stretch, mixing at an SNR.

Every function takes a numpy Generator, so a training run with the same seed makes the
same copies. Pitch shift and time stretch use a phase vocoder (numpy STFT) so pitch can
change without the duration and the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

from earwitness.shared.audio import SAMPLE_RATE

Wave = npt.NDArray[np.float32]
N_FFT = 512
HOP = 128
EPS = 1e-12


@dataclass(frozen=True)
class AugmentSettings:
    copies: int = 4  # augmented copies of each positive clip
    gain_db: tuple[float, float] = (-12.0, 6.0)
    shift_s: float = 0.48  # up to one window hop of leading offset: windows fall elsewhere
    pitch_semitones: float = 2.0
    stretch: tuple[float, float] = (0.85, 1.15)
    snr_db: tuple[float, float] = (0.0, 20.0)
    mix_probability: float = 0.7  # of a copy being mixed into a background clip


def _stft(x: Wave) -> npt.NDArray[np.complex64]:
    window = np.hanning(N_FFT).astype(np.float32)
    pad = np.pad(x, (N_FFT // 2, N_FFT // 2))
    n = 1 + max(0, (pad.size - N_FFT) // HOP)
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    return np.fft.rfft(pad[idx] * window, axis=1).astype(np.complex64)


def _istft(spec: npt.NDArray[np.complex64], length: int) -> Wave:
    window = np.hanning(N_FFT).astype(np.float32)
    frames = np.fft.irfft(spec, n=N_FFT, axis=1).astype(np.float32) * window
    out = np.zeros(HOP * (len(frames) - 1) + N_FFT, dtype=np.float32)
    norm = np.zeros_like(out)
    for i, frame in enumerate(frames):
        out[i * HOP : i * HOP + N_FFT] += frame
        norm[i * HOP : i * HOP + N_FFT] += window**2
    out = (out / np.maximum(norm, 1e-3)).astype(np.float32)[N_FFT // 2 :]
    return np.pad(out, (0, max(0, length - out.size)))[:length]


def time_stretch(x: Wave, rate: float) -> Wave:
    """Play ``rate`` times as fast at the same pitch (rate > 1: shorter)."""
    if x.size < N_FFT or abs(rate - 1.0) < 1e-3:
        return x.copy()
    spec = _stft(x)
    steps = np.arange(0, len(spec) - 1, rate)
    advance = 2 * np.pi * HOP * np.arange(spec.shape[1]) / N_FFT
    phase = np.angle(spec[0])
    out = np.empty((len(steps), spec.shape[1]), dtype=np.complex64)
    for i, t in enumerate(steps):
        k = int(t)
        frac = t - k
        a, b = spec[k], spec[k + 1]
        mag = (1 - frac) * np.abs(a) + frac * np.abs(b)
        out[i] = mag * np.exp(1j * phase)
        delta = np.angle(b) - np.angle(a) - advance
        delta -= 2 * np.pi * np.round(delta / (2 * np.pi))
        phase = phase + advance + delta
    return _istft(out, round(x.size / rate))


def pitch_shift(x: Wave, semitones: float) -> Wave:
    """Change pitch by ``semitones``, keeping the duration."""
    if abs(semitones) < 1e-3:
        return x.copy()
    factor = 2.0 ** (semitones / 12.0)
    stretched = time_stretch(x, 1.0 / factor)  # longer by `factor` ...
    resampled = soxr.resample(stretched, SAMPLE_RATE * factor, SAMPLE_RATE)  # ... then faster
    out = np.zeros(x.size, dtype=np.float32)
    n = min(x.size, resampled.size)
    out[:n] = resampled[:n]
    return out


def rms(x: Wave) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + EPS))


def loud_rms(x: Wave, frame: int = 1600) -> float:
    """RMS of the loudest 10 % of 0.1 s frames: the event's level, not its silence."""
    if x.size < frame:
        return rms(x)
    frames = x[: x.size - x.size % frame].reshape(-1, frame)
    levels = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1) + EPS)
    top = np.sort(levels)[-max(1, len(levels) // 10) :]
    return float(np.mean(top))


def mix(foreground: Wave, background: Wave, snr_db: float, rng: np.random.Generator) -> Wave:
    """``foreground`` over a random stretch of ``background`` (looped as needed), the
    event's loud part ``snr_db`` above the background."""
    if background.size == 0:
        return foreground.copy()
    reps = int(np.ceil(foreground.size / background.size)) + 1
    looped = np.tile(background, reps)
    start = int(rng.integers(0, looped.size - foreground.size + 1))
    bg = looped[start : start + foreground.size]
    scale = loud_rms(foreground) / (rms(bg) * 10 ** (snr_db / 20.0))
    return (foreground + bg * np.float32(scale)).astype(np.float32)


def augment(
    x: Wave, backgrounds: list[Wave], settings: AugmentSettings, rng: np.random.Generator
) -> tuple[Wave, Wave]:
    """One random copy of ``x``, and the same copy without the background mixed in (what
    training reads window loudness from: a mixed-in vacuum cleaner is not the event).
    Each transform is applied with probability 1/2, mixing with
    ``settings.mix_probability``, the time shift always."""
    y = x
    if rng.random() < 0.5:
        y = pitch_shift(y, float(rng.uniform(-1, 1) * settings.pitch_semitones))
    if rng.random() < 0.5:
        y = time_stretch(y, float(rng.uniform(*settings.stretch)))
    clean = y
    if backgrounds and rng.random() < settings.mix_probability:
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        y = mix(y, bg, float(rng.uniform(*settings.snr_db)), rng)
    gain = np.float32(10 ** (rng.uniform(*settings.gain_db) / 20.0))
    lead = np.zeros(int(rng.uniform(0, settings.shift_s) * SAMPLE_RATE), dtype=np.float32)
    y = np.concatenate([lead, y * gain])
    clean = np.concatenate([lead, clean * gain])
    peak = float(np.max(np.abs(y))) if y.size else 0.0
    if peak > 0.99:  # a recorder's limiter: scale, never clip
        y, clean = y / peak * 0.99, clean / peak * 0.99
    return y.astype(np.float32), clean.astype(np.float32)
