"""Sounds the project makes itself, so demos and tests need no third-party audio."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from earwitness.shared.audio import SAMPLE_RATE, Waveform

KINDS = ("siren", "beeps", "noise", "tone", "silence", "impacts")


def _t(seconds: float, rate: int) -> np.ndarray:
    return np.arange(int(seconds * rate)) / rate


def siren(seconds: float = 5.0, rate: int = SAMPLE_RATE, period: float = 0.3) -> Waveform:
    """A fast wailing siren: 600-1400 Hz sweep with harmonics (YAMNet: Siren ~0.8)."""
    t = _t(seconds, rate)
    freq = 1000 + 400 * np.sin(2 * np.pi * t / period)
    phase = 2 * np.pi * np.cumsum(freq) / rate
    wave = (
        np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.3 * np.sin(3 * phase) + 0.2 * np.sin(4 * phase)
    )
    return (0.25 * wave / np.abs(wave).max()).astype(np.float32)


def beeps(seconds: float = 5.0, rate: int = SAMPLE_RATE, hz: float = 3100.0) -> Waveform:
    """A smoke-alarm-like pattern: 0.5 s on / 0.5 s off at about 3.1 kHz."""
    t = _t(seconds, rate)
    gate = (np.floor(t / 0.5) % 2 == 0).astype(np.float64)
    return (0.3 * gate * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(
    seconds: float = 5.0, rate: int = SAMPLE_RATE, seed: int = 0, level: float = 0.05
) -> Waveform:
    return (level * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(
        np.float32
    )


def tone(seconds: float = 5.0, rate: int = SAMPLE_RATE, hz: float = 440.0) -> Waveform:
    return (0.3 * np.sin(2 * np.pi * hz * _t(seconds, rate))).astype(np.float32)


def silence(seconds: float = 5.0, rate: int = SAMPLE_RATE) -> Waveform:
    return np.zeros(int(seconds * rate), dtype=np.float32)


def impacts(seconds: float = 5.0, rate: int = SAMPLE_RATE, seed: int = 0) -> Waveform:
    """Sharp decaying noise bursts (knocks, bangs) every 0.7 s."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * rate), dtype=np.float64)
    burst_len = int(0.15 * rate)
    env = np.exp(-np.arange(burst_len) / (0.02 * rate))
    for start in range(0, out.size - burst_len, int(0.7 * rate)):
        out[start : start + burst_len] += 0.6 * env * rng.standard_normal(burst_len)
    return np.clip(out, -1, 1).astype(np.float32)


def make(kind: str, seconds: float = 5.0, rate: int = SAMPLE_RATE) -> Waveform:
    makers: dict[str, Callable[[float, int], Waveform]] = {
        "siren": siren,
        "beeps": beeps,
        "noise": noise,
        "tone": tone,
        "silence": silence,
        "impacts": impacts,
    }
    if kind not in makers:
        raise ValueError(f"unknown sound '{kind}'; choose from {', '.join(KINDS)}")
    return makers[kind](seconds, rate)
