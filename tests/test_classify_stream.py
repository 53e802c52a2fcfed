"""Long files are classified block by block: same answer as whole, bounded memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from earwitness.shared import audio
from earwitness.shared.classify import LongFile, classify_stream, classify_waveform, iter_decoded
from tests.conftest import ESC50


def _esc50_concat(n: int = 6) -> np.ndarray:
    return np.concatenate([audio.load(p) for p in sorted(ESC50.glob("*.flac"))[:n]])


def test_streamed_equals_whole_at_16k(patch_model, class_map, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wave = _esc50_concat()
    path = tmp_path / "long.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    whole = classify_waveform(patch_model, class_map, audio.load(path), str(path), 5)
    seen: list[float] = []
    # 0.7 s blocks: never aligned with the 0.48 s hop or the frontend's groups
    streamed = classify_stream(
        patch_model, class_map, audio.stream(path, 0.7), str(path), 5, on_progress=seen.append
    )
    assert streamed.duration_s == whole.duration_s
    assert streamed.windows == whole.windows  # every window's top-5, scores included
    assert whole.mean_scores is not None and streamed.mean_scores is not None
    np.testing.assert_allclose(streamed.mean_scores, whole.mean_scores, atol=1e-5)
    assert streamed.summary_max == whole.summary_max
    assert abs(sum(seen) - whole.duration_s) < 1e-6


def test_streamed_resampling_matches_whole_file(patch_model, class_map, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    wave16 = _esc50_concat(4)
    wave44 = audio.resample(wave16, 16000, 44100)
    path = tmp_path / "long44.flac"
    sf.write(path, np.clip(wave44, -1, 1), 44100, subtype="PCM_24")
    whole = classify_waveform(patch_model, class_map, audio.load(path), str(path), 1)
    streamed = classify_stream(patch_model, class_map, audio.stream(path, 1.3), str(path), 1)
    assert len(streamed.windows) == len(whole.windows)
    same_top = sum(
        a[1][0].index == b[1][0].index for a, b in zip(streamed.windows, whole.windows, strict=True)
    )
    assert same_top >= 0.95 * len(whole.windows)


def test_long_files_are_left_to_streaming(tmp_path: Path) -> None:
    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, np.zeros(16000, np.float32), 16000)
    sf.write(long, np.zeros(16000 * 20, np.float32), 16000)
    got = dict(iter_decoded([short, long], threads=1, long_file_s=10))
    assert isinstance(got[long], LongFile) and got[long].seconds == 20
    assert isinstance(got[short], np.ndarray) and got[short].size == 16000
