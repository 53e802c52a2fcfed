from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ESC50, MODELS


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "earwitness", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EARWITNESS_MODEL_DIR": str(MODELS), **(env or {})},
    )


def test_classify_directory_with_a_corrupt_file(tmp_path: Path) -> None:
    clips = sorted(ESC50.glob("*.flac"))[:2]
    for clip in clips:
        shutil.copy(clip, tmp_path / clip.name)
    (tmp_path / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 64)
    proc = run("classify", str(tmp_path), "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    by_name = {Path(f["path"]).name: f for f in out["files"]}
    assert "not a readable audio file" in by_name["broken.flac"]["error"]
    for clip in clips:
        result = by_name[clip.name]
        assert len(result["windows"]) == 10
        assert len(result["summary"]["mean"]) == 3
    assert "1 of 3 files failed" in proc.stderr


def test_classify_generated_siren_text_output() -> None:
    proc = run("classify", "--generate", "siren", "--windows")
    assert proc.returncode == 0, proc.stderr
    assert "mean: Siren" in proc.stdout


def test_classify_reports_missing_model_dir(tmp_path: Path) -> None:
    proc = run("classify", "--generate", "tone", "--model-dir", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert "yamnet_spectra_in.tflite is missing" in proc.stderr


def test_eval_reaches_target_on_esc50() -> None:
    proc = run("eval", str(ESC50), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mean"]["clips"] == 256
    assert len(report["mean"]["per_class"]) == 50
    assert report["accuracy"] >= 0.70


def test_models_list_and_verify() -> None:
    proc = run("models", "list")
    assert proc.returncode == 0
    assert "yamnet-int8" in proc.stdout and "present" in proc.stdout
    proc = run("models", "verify", "yamnet-int8", "yamnet-waveform", "yamnet-class-map")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("bad", [["classify", "--top", "x"], ["nosuch"]])
def test_bad_arguments_exit_2(bad: list[str]) -> None:
    assert run(*bad).returncode == 2
