"""Decoding any common audio file into the 16 kHz mono float32 waveform YAMNet expects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from earwitness.shared.errors import AudioError

SAMPLE_RATE = 16_000
"""YAMNet (and VGGish) were trained on 16 kHz mono audio."""

RESAMPLE_QUALITY = "HQ"
"""soxr's high quality preset: steep anti-aliasing filter, cheap enough for 500x real time."""

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au"})

Waveform = npt.NDArray[np.float32]


def to_float32(samples: npt.NDArray[np.generic], source: str = "<array>") -> Waveform:
    """Scale integer PCM to [-1, 1]; pass float through. Accepts int16, int32, uint8 and floats."""
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return (samples.astype(np.float64) / 2147483648.0).astype(np.float32)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(samples.dtype, np.floating):
        return samples.astype(np.float32, copy=False)
    raise AudioError(source, f"unsupported sample type {samples.dtype}")


def to_mono(samples: npt.NDArray[np.float32], source: str = "<array>") -> Waveform:
    """Average the channels of a (frames, channels) array; a 1-D array is already mono."""
    if samples.ndim == 1:
        return samples
    if samples.ndim != 2:
        raise AudioError(source, f"expected (frames, channels) audio, got shape {samples.shape}")
    if samples.shape[1] == 0:
        raise AudioError(source, "audio has zero channels")
    if samples.shape[1] == 1:
        return np.ascontiguousarray(samples[:, 0])
    return samples.mean(axis=1, dtype=np.float32)


def resample(samples: Waveform, rate: int, target: int = SAMPLE_RATE) -> Waveform:
    """Band-limited resampling (soxr), never linear interpolation, so nothing aliases in."""
    if rate == target:
        return samples
    out = soxr.resample(samples, rate, target, quality=RESAMPLE_QUALITY)
    return np.asarray(out, dtype=np.float32)


def check_finite(samples: Waveform, source: str) -> None:
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(source, f"{bad} samples are NaN or infinite")


def prepare(samples: npt.NDArray[np.generic], rate: int, source: str = "<array>") -> Waveform:
    """Turn decoded samples of any layout and type into checked 16 kHz mono float32."""
    if rate <= 0:
        raise AudioError(source, f"invalid sample rate {rate}")
    mono = to_mono(to_float32(np.asarray(samples), source), source)
    if mono.size == 0:
        raise AudioError(source, "audio is empty (0 samples)")
    check_finite(mono, source)
    return resample(mono, rate)


def load(path: str | Path) -> Waveform:
    """Decode WAV/FLAC/OGG (MP3 where libsndfile supports it) to 16 kHz mono float32."""
    p = Path(path)
    source = str(p)
    if not p.exists():
        raise AudioError(source, "file not found")
    if p.is_dir():
        raise AudioError(source, "is a directory, not an audio file")
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(source, f"not a readable audio file ({exc})") from exc
    return prepare(data, int(rate), source)


def duration_s(path: str | Path) -> float | None:
    """Length from the file's header (no decoding); None when it cannot be read."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    return float(info.frames) / float(info.samplerate) if info.samplerate else None


STREAM_BLOCK_S = 30.0  # decoded at a time when streaming: ~2 MB of 16 kHz float32


def stream(path: str | Path, block_s: float = STREAM_BLOCK_S) -> Iterator[Waveform]:
    """Decode a long file block by block into 16 kHz mono float32, in bounded memory.
    At 16 kHz the blocks join into exactly what ``load`` returns; other rates go through
    soxr's streaming resampler (the same filter, state kept across blocks)."""
    source = str(path)
    try:
        handle = sf.SoundFile(source)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(source, f"not a readable audio file ({exc})") from exc
    with handle:
        rate = int(handle.samplerate)
        if rate <= 0:
            raise AudioError(source, f"invalid sample rate {rate}")
        resampler = (
            None
            if rate == SAMPLE_RATE
            else soxr.ResampleStream(
                rate, SAMPLE_RATE, 1, dtype="float32", quality=RESAMPLE_QUALITY
            )
        )
        produced = 0
        for block in handle.blocks(
            blocksize=max(1, int(rate * block_s)), dtype="float32", always_2d=True
        ):
            mono = to_mono(block, source)
            check_finite(mono, source)
            if resampler is not None:
                mono = np.asarray(resampler.resample_chunk(mono), dtype=np.float32)
            produced += mono.size
            yield mono
        if resampler is not None:
            tail = np.asarray(
                resampler.resample_chunk(np.zeros(0, np.float32), last=True), dtype=np.float32
            )
            produced += tail.size
            yield tail
        if produced == 0:
            raise AudioError(source, "audio is empty (0 samples)")


def decode_bytes(blob: bytes, source: str = "<bytes>") -> Waveform:
    """Decode an in-memory audio file (a clip received over the network)."""
    import io

    if not blob:
        raise AudioError(source, "audio is empty (0 bytes)")
    try:
        data, rate = sf.read(io.BytesIO(blob), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(source, f"not a readable audio file ({exc})") from exc
    return prepare(data, int(rate), source)


def encode_flac(samples: Waveform, rate: int = SAMPLE_RATE) -> bytes:
    """Lossless 16-bit FLAC: about half the size of WAV for clips sent over MQTT."""
    import io

    buf = io.BytesIO()
    sf.write(buf, np.clip(samples, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def find_audio_files(paths: list[Path]) -> list[Path]:
    """Expand directories (recursively, sorted) into the audio files they hold."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(f for f in path.rglob("*") if f.suffix.lower() in AUDIO_EXTENSIONS))
        else:
            found.append(path)
    return found
