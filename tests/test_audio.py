from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from earwitness.shared import audio
from earwitness.shared.errors import AudioError
from tests.conftest import ESC50


def _tone(hz: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int = audio.SAMPLE_RATE) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spec.argmax()])


def test_esc50_flac_44k_decodes_to_16k_mono() -> None:
    path = sorted(ESC50.glob("*.flac"))[0]
    info = sf.info(str(path))
    assert info.samplerate == 44100
    wave = audio.load(path)
    assert wave.dtype == np.float32
    assert wave.ndim == 1
    assert abs(wave.size - round(info.frames * 16000 / 44100)) <= 1
    original, _ = sf.read(str(path), dtype="float32")
    # Band-limiting may overshoot full scale slightly (Gibbs) but keeps the energy.
    assert np.abs(wave).max() < 1.2
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    assert rms(wave) == pytest.approx(rms(original), rel=0.05)


def test_8k_wav_is_upsampled_and_keeps_pitch(tmp_path: Path) -> None:
    path = tmp_path / "tone8k.wav"
    sf.write(path, _tone(1000, 8000), 8000, subtype="PCM_16")
    wave = audio.load(path)
    assert wave.size == 16000
    assert abs(_peak_hz(wave) - 1000) < 2


def test_stereo_is_mixed_to_mono(tmp_path: Path) -> None:
    left = _tone(440, 16000)
    stereo = np.stack([left, -left * 0 + left], axis=1)
    stereo[:, 1] = 0.0  # right channel silent: mean halves the amplitude
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    wave = audio.load(path)
    np.testing.assert_allclose(wave, left / 2, atol=1e-6)


def test_int32_wav(tmp_path: Path) -> None:
    data = (_tone(440, 16000) * 2**31).astype(np.int32)
    path = tmp_path / "i32.wav"
    sf.write(path, data, 16000, subtype="PCM_32")
    wave = audio.load(path)
    np.testing.assert_allclose(wave, data / 2**31, atol=1e-6)


def test_int_arrays_are_scaled() -> None:
    np.testing.assert_allclose(audio.to_float32(np.array([-32768, 16384], np.int16)), [-1, 0.5])
    np.testing.assert_allclose(audio.to_float32(np.array([2**30], np.int32)), [0.5])


def test_resampler_suppresses_aliasing() -> None:
    # 12 kHz is above the 8 kHz Nyquist of the output: a proper low-pass removes it.
    # Linear interpolation would fold it down to a loud 4 kHz alias.
    x = _tone(12000, 44100)
    y = audio.resample(x, 44100)
    assert np.sqrt(np.mean(y[1000:-1000] ** 2)) < 1e-3
    passband = audio.resample(_tone(3000, 44100), 44100)
    assert np.sqrt(np.mean(passband[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_missing_file() -> None:
    with pytest.raises(AudioError, match="nope.wav: file not found"):
        audio.load("nope.wav")


def test_not_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio")
    with pytest.raises(AudioError, match=r"notes\.wav: not a readable audio file"):
        audio.load(path)


def test_empty_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        audio.load(path)


def test_nan_samples(tmp_path: Path) -> None:
    data = _tone(440, 16000)
    data[100:110] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: 10 samples are NaN or infinite"):
        audio.load(path)


def test_inf_samples_in_memory() -> None:
    data = _tone(440, 16000)
    data[5] = np.inf
    with pytest.raises(AudioError, match="1 samples are NaN or infinite"):
        audio.prepare(data, 16000, "mic")


def test_zero_channels() -> None:
    with pytest.raises(AudioError, match="zero channels"):
        audio.prepare(np.zeros((100, 0), np.float32), 16000, "mic")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="is a directory"):
        audio.load(tmp_path)


def test_decode_bytes_roundtrip_flac() -> None:
    wave = _tone(440, 16000)
    blob = audio.encode_flac(wave)
    assert blob[:4] == b"fLaC"
    np.testing.assert_allclose(audio.decode_bytes(blob), wave, atol=1 / 32768 + 1e-7)
    with pytest.raises(AudioError, match="clip-1: not a readable audio file"):
        audio.decode_bytes(b"garbage" * 10, "clip-1")
