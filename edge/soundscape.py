"""A soundscape the project synthesizes itself, for the demo and simulated devices.

What the int8 YAMNet makes of each part (checked with `earwitness classify --generate`):
the fast wailing siren scores Siren ~0.8 (alarm group), the 3.1 kHz beeps score Smoke
detector ~0.5 (alarm group), noise scores White noise, impacts Slap/Hands. Speech comes
from espeak-ng when it is installed, so the privacy filter has something to withhold.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from earwitness.shared import audio, synth
from earwitness.shared.audio import SAMPLE_RATE, Waveform

SPEECH_LINES = [
    "The delivery is at the back door.",
    "Can you hear me? Please call me back.",
    "Der Zug nach Wien fährt um acht Uhr.",
]


def espeak(text: str, voice: str = "en") -> Waveform | None:
    binary = shutil.which("espeak-ng") or shutil.which("espeak")
    if binary is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "speech.wav"
        proc = subprocess.run(
            [binary, "-v", voice, "-w", str(out), text], capture_output=True, timeout=30
        )
        if proc.returncode != 0 or not out.exists():
            return None
        return audio.load(out)


def soundscape(seed: int, seconds: float = 60.0) -> Waveform:
    """Background noise with sirens, alarm beeps, impacts and (if available) speech
    placed at random, different for every seed."""
    rng = np.random.default_rng(seed)
    total = int(seconds * SAMPLE_RATE)
    out = synth.noise(seconds, seed=seed, level=0.003 + 0.004 * rng.random())
    parts: list[Waveform] = [
        synth.siren(4.0 + 2 * rng.random()),
        synth.beeps(4.0),
        synth.impacts(3.0, seed=seed),
        synth.tone(2.0, hz=float(rng.choice([440.0, 880.0, 1000.0]))),
    ]
    line = SPEECH_LINES[seed % len(SPEECH_LINES)]
    spoken = espeak(line, "de" if "Zug" in line else "en")
    if spoken is not None:
        parts.append(0.5 * spoken / max(1e-6, float(np.abs(spoken).max())))
    order = rng.permutation(len(parts))
    slot = total // (len(parts) + 1)
    for k, idx in enumerate(order):
        part = parts[idx][:slot]
        start = int(slot * k + rng.integers(0, max(1, slot - part.size)))
        out[start : start + part.size] += part * float(0.5 + 0.5 * rng.random())
    return np.clip(out, -1.0, 1.0).astype(np.float32)
