"""Custom heads: training on real distress recordings, the artifact, augmentation, the CLI."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from earwitness.cli import main
from earwitness.cloud.heads import augment as aug
from earwitness.cloud.heads.dataset import (
    data_hash,
    group_folds,
    parse_relabel,
    read_dataset,
    read_extra,
)
from earwitness.cloud.heads.train import auc, embed
from earwitness.shared import audio
from earwitness.shared.errors import ConfigError
from earwitness.shared.heads import HeadError, load_head, load_heads, parse_head
from earwitness.shared.runner import YamnetModel
from tests.conftest import MODELS
from tests.heads_helpers import Split, write_subset


def _clip_scores(model: YamnetModel, head_path: Path, paths: list[Path]) -> np.ndarray:
    head = load_head(head_path)
    return np.stack([head.scores(embed(model, audio.load(p))[0]).max(axis=0) for p in paths])


def test_train_writes_a_loadable_head_with_report_and_plots(
    distress_head: tuple[Path, Split],
) -> None:
    path, split = distress_head
    head = load_head(path)
    assert head.classes == ["glass_break", "scream"]
    assert head.model_id.startswith("yamnet-int8@")
    assert all(0 < t <= 1 for t in head.thresholds.values())
    assert head.meta["data_sha256"] == data_hash(split.train)
    assert head.meta["background"] == "negative"
    validation = head.meta["validation"]
    assert validation["validation_clips"] > 0 and validation["training_copies"] > 0
    report = path.with_name(path.stem + "-report")
    for name in ("pr_curve.png", "confusion.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((report / "report.json").read_text())
    assert set(written["per_class"]) == {"glass_break", "scream"}
    assert written["confusion"]["labels"] == ["glass_break", "scream", "negative"]


def test_head_separates_classes_on_recordings_it_never_saw(
    distress_head: tuple[Path, Split], patch_model: YamnetModel
) -> None:
    """Held-out groups (other recordings, other speakers): each class's clip score ranks
    its own clips above the rest (AUC), far above chance."""
    path, split = distress_head
    held = split.held_out
    scores = _clip_scores(patch_model, path, [e.path for e in held])
    labels = np.array([e.label for e in held])
    head = load_head(path)
    for k, c in enumerate(head.classes):
        truth = labels == c
        assert truth.sum() >= 5, f"too few held-out {c} clips for a meaningful check"
        assert auc(scores[:, k].astype(np.float32), truth) >= 0.9, c


def test_training_is_reproducible(tmp_path: Path, distress_head: tuple[Path, Split]) -> None:
    _path, split = distress_head
    tiny = [e for e in split.train if e.label != "negative"][:6] + [
        e for e in split.train if e.label == "negative"
    ][:14]
    data = write_subset(tiny, tmp_path / "tiny")
    digests = []
    for run in ("a", "b"):
        out = tmp_path / f"{run}.json"
        assert main(["train", str(data), "--out", str(out), "--model-dir", str(MODELS)]) == 0
        doc = json.loads(out.read_text())
        digests.append((doc["arrays"], doc["thresholds"]))
    assert digests[0] == digests[1]


def test_weights_are_stored_as_float16_and_format_1_files_still_load(
    distress_head: tuple[Path, Split], tmp_path: Path
) -> None:
    """A trained head's arrays are on the float16 grid (stored at half the bytes, the
    same scores after loading); a format 1 file with float32 arrays loads unchanged."""
    from earwitness.shared.heads import INPUTS, _digest

    path, _ = distress_head
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 2 and doc["input"] == INPUTS[False]
    assert all("f16" in blob and "f32" not in blob for blob in doc["arrays"].values())
    head = load_head(path)
    assert not head.delta
    feats = np.random.default_rng(1).normal(size=(5, 1545)).astype(np.float32)
    v1 = dict(doc, format_version=1)
    v1["arrays"] = {
        k: {
            "shape": list(head.arrays[k].shape),
            "f32": base64.b64encode(head.arrays[k].astype("<f4").tobytes()).decode(),
        }
        for k in head.arrays
    }
    v1["sha256"] = _digest(v1)
    old = parse_head(json.dumps(v1).encode(), "v1.json")
    np.testing.assert_array_equal(old.scores(feats), head.scores(feats))
    assert old.to_document()["arrays"] == doc["arrays"]  # exact float16 values: f16 again
    unknown = dict(doc, format_version=4)
    unknown["sha256"] = _digest(unknown)
    with pytest.raises(HeadError, match="format version 4, this release reads 1, 2, 3"):
        parse_head(json.dumps(unknown).encode(), "future.json")
    assert len(path.read_bytes()) < 500_000, "a head must fit a remote config inline"


def test_a_delta_head_is_format_3_and_its_file_says_what_it_reads(
    delta_head: tuple[Path, Split],
) -> None:
    from earwitness.shared.heads import INPUTS, _digest

    path, _ = delta_head
    doc = json.loads(path.read_text())
    assert doc["format_version"] == 3 and doc["input"] == INPUTS[True]
    assert load_head(path).delta and doc["meta"]["settings"]["delta"] is True
    # A delta head's arrays under format 2 (an edited file) are refused by their shape.
    as_v2 = dict(doc, format_version=2, input=INPUTS[False])
    as_v2["sha256"] = _digest(as_v2)
    with pytest.raises(HeadError, match=r"shape \(2569,\), expected \(1545,\)"):
        parse_head(json.dumps(as_v2).encode(), "edited.json")
    wrong_input = dict(doc, input="vggish-128")
    wrong_input["sha256"] = _digest(wrong_input)
    with pytest.raises(HeadError, match="input 'vggish-128'"):
        parse_head(json.dumps(wrong_input).encode(), "other.json")


def test_a_delta_head_scores_a_stream_window_by_window_as_a_whole_clip(
    delta_head: tuple[Path, Split],
) -> None:
    """What a device computes one window at a time (with the window before) equals the
    whole clip at once; the first window reads no change; a change makes a difference."""
    path, _ = delta_head
    head = load_head(path)
    # windows like the training data (random ones of unit variance saturate every score)
    mean, scale = head.arrays["mean"][:1545], head.arrays["scale"][:1545]
    noise = np.random.default_rng(2).normal(size=(6, 1545))
    feats = (mean + 0.5 * scale * noise).astype(np.float32)
    whole = head.scores(feats)
    assert whole.min() > 0.001 and whole.max() < 0.999, "scores not saturated"
    one_by_one = [head.scores(feats[:1])[0]]
    one_by_one += [head.scores(feats[i], feats[i - 1])[0] for i in range(1, 6)]
    # float32 sums of 2,569 products differ in the last bits between one row and a batch
    np.testing.assert_allclose(np.stack(one_by_one), whole, atol=2e-3)
    np.testing.assert_allclose(head.scores(feats[:1], feats[0]), whole[:1], atol=2e-3)
    assert np.abs(head.scores(feats[3], feats[0]) - whole[3:4]).max() > 0.02


def _tamper(path: Path, change: Any, tmp_path: Path) -> Path:
    doc = json.loads(path.read_text())
    change(doc)
    out = tmp_path / "tampered.json"
    out.write_text(json.dumps(doc))
    return out


def test_damaged_edited_or_foreign_heads_are_refused(
    distress_head: tuple[Path, Split], tmp_path: Path
) -> None:
    path, _ = distress_head

    def flip_weight(doc: dict[str, Any]) -> None:
        w2 = doc["arrays"]["w2"]
        key = "f16" if "f16" in w2 else "f32"
        raw = bytearray(base64.b64decode(w2[key]))
        raw[0] ^= 0x40
        w2[key] = base64.b64encode(bytes(raw)).decode()

    def lower_threshold(doc: dict[str, Any]) -> None:
        doc["thresholds"]["scream"] = 0.01

    for change in (flip_weight, lower_threshold):
        with pytest.raises(HeadError, match="checksum mismatch"):
            load_head(_tamper(path, change, tmp_path))
    with pytest.raises(HeadError, match="not JSON"):
        parse_head(path.read_bytes()[:1000], "cut.json")
    with pytest.raises(HeadError, match="format"):
        parse_head(b'{"format": "something-else"}', "other.json")
    with pytest.raises(HeadError, match="cannot read"):
        load_head(tmp_path / "missing.json")
    with pytest.raises(HeadError, match="trained on yamnet-int8@.*runs yamnet-waveform@"):
        load_heads([path], "yamnet-waveform@687f226c147a")
    with pytest.raises(HeadError, match="class 'glass_break' is also in"):
        load_heads([path, path], load_head(path).model_id)


def test_augmentation_is_seeded_and_does_what_it_says() -> None:
    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)

    def peak_hz(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x[2000:14000]))
        return float(np.argmax(spectrum) * 16000 / 12000)

    shifted = aug.pitch_shift(tone, 12)
    assert shifted.size == tone.size and abs(peak_hz(shifted) - 880) < 10
    slower = aug.time_stretch(tone, 0.5)
    assert slower.size == 2 * tone.size and abs(peak_hz(slower) - 440) < 10
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(8000).astype(np.float32) * 0.1
    mixed = aug.mix(tone, noise, 10.0, np.random.default_rng(2))
    snr = 20 * np.log10(aug.loud_rms(tone) / aug.rms(mixed - tone))
    assert abs(snr - 10.0) < 0.5
    settings = aug.AugmentSettings()
    a = aug.augment(tone, [noise], settings, np.random.default_rng(7))
    b = aug.augment(tone, [noise], settings, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    mixed_copy, clean_copy = a
    assert mixed_copy.size == clean_copy.size and np.abs(mixed_copy).max() <= 0.99 + 1e-6


def test_dataset_layouts_and_errors(tmp_path: Path) -> None:
    wave = np.zeros(8000, dtype=np.float32)
    import soundfile as sf

    for label in ("bang", "negative"):
        (tmp_path / "classes" / label).mkdir(parents=True)
        sf.write(tmp_path / "classes" / label / "a.wav", wave, 16000)
    examples = read_dataset(tmp_path / "classes")
    assert sorted(e.label for e in examples) == ["bang", "negative"]
    assert len({e.group for e in examples}) == 2  # no group_id: every file its own group
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "meta.csv").write_text("filename,label\nthere.wav,bang\n")
    with pytest.raises(ConfigError, match=r"meta.csv line 2: 'there.wav' does not exist"):
        read_dataset(bad)
    (bad / "meta.csv").write_text("file,label\n")
    with pytest.raises(ConfigError, match="no 'filename' column"):
        read_dataset(bad)


def _esc50_subset(directory: Path, per_category: dict[str, int]) -> Path:
    """An ESC-50 style folder (``category`` column) of symlinks to the shared clips."""
    import csv

    from tests.conftest import SHARED

    esc = SHARED / "audio" / "esc50"
    rows = list(csv.DictReader((esc / "meta.csv").open()))
    directory.mkdir(parents=True)
    lines = ["filename,category,esc50_target"]
    for category, n in per_category.items():
        for row in [r for r in rows if r["category"] == category][:n]:
            (directory / row["filename"]).symlink_to(esc / row["filename"])
            lines.append(f"{row['filename']},{category},{row['esc50_target']}")
    (directory / "meta.csv").write_text("\n".join(lines) + "\n")
    return directory


def test_public_corpus_labels_are_read_and_mapped(tmp_path: Path) -> None:
    esc = _esc50_subset(tmp_path / "esc", {"glass_breaking": 2, "toilet_flush": 1, "dog": 1})
    mapping = parse_relabel(["glass_breaking=glass_break"])
    labels = sorted(e.label for e in read_dataset(esc, mapping))
    assert labels == ["dog", "glass_break", "glass_break", "toilet_flush"]
    extra = read_extra(esc, ["glass_break", "scream"], "negative", mapping)
    assert sorted(e.label for e in extra) == ["glass_break", "glass_break", "negative", "negative"]
    assert all(e.group.startswith("extra:esc:") for e in extra)
    for bad in ("glass_breaking", "=glass_break", "a="):
        with pytest.raises(ConfigError, match=rf"--map '{bad}': expected FROM=TO"):
            parse_relabel([bad])
    (tmp_path / "nolabel").mkdir()
    (tmp_path / "nolabel" / "meta.csv").write_text("filename,take\n")
    with pytest.raises(ConfigError, match="no label column"):
        read_dataset(tmp_path / "nolabel")


def test_extra_clips_train_but_are_never_held_out(
    tmp_path: Path, distress_head: tuple[Path, Split]
) -> None:
    """`train --extra`: the corpus's clips are in the training data (and its hash), never
    in the validation report, and its other classes are background."""
    _path, split = distress_head
    tiny = [e for e in split.train if e.label != "negative"][:6] + [
        e for e in split.train if e.label == "negative"
    ][:14]
    data = write_subset(tiny, tmp_path / "tiny")
    esc = _esc50_subset(tmp_path / "esc", {"glass_breaking": 2, "vacuum_cleaner": 2})
    plain, extended = tmp_path / "plain.json", tmp_path / "extended.json"
    base = ["--model-dir", str(MODELS)]
    assert main(["train", str(data), "--out", str(plain), *base]) == 0
    args = ["--extra", str(esc), "--map", "glass_breaking=glass_break"]
    assert main(["train", str(data), "--out", str(extended), *args, *base]) == 0
    a, b = load_head(plain), load_head(extended)
    assert a.meta["extra_clips"] == 0 and b.meta["extra_clips"] == 4
    va, vb = a.meta["validation"], b.meta["validation"]
    assert va["validation_clips"] == vb["validation_clips"] > 0
    assert vb["training_clips"] == va["training_clips"] + 4
    mapping = {"glass_breaking": "glass_break"}
    extra = read_extra(esc, b.classes, "negative", mapping)
    assert b.meta["data_sha256"] == data_hash([*read_dataset(data), *extra])
    assert a.meta["data_sha256"] == data_hash(read_dataset(data)) != b.meta["data_sha256"]
    assert main(["train", str(data), "--out", str(tmp_path / "x.json"), "--map", "oops"]) == 2


def test_group_folds_never_split_a_recording() -> None:
    from tests.heads_helpers import DISTRESS

    examples = read_dataset(DISTRESS)
    folds = group_folds(examples, 5, 0)
    fold_of: dict[str, set[int]] = {}
    for ex, f in zip(examples, folds, strict=True):
        fold_of.setdefault(ex.group, set()).add(f)
    assert all(len(v) == 1 for v in fold_of.values())
    for label in ("scream", "glass_break"):
        assert {f for ex, f in zip(examples, folds, strict=True) if ex.label == label} == set(
            range(5)
        )


@pytest.mark.parametrize("which", ["distress_head", "delta_head"])
def test_classify_and_eval_head_cli(
    which: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    patch_model: YamnetModel,
) -> None:
    """classify streams windows (a delta head gets each window's predecessor) and must
    give the scores of the whole clip at once."""
    path, split = request.getfixturevalue(which)
    capsys.readouterr()  # a head trained just now (run alone) printed its training report
    clip = next(e.path for e in split.held_out if e.label == "scream")
    assert (
        main(["classify", str(clip), "--head", str(path), "--json", "--model-dir", str(MODELS)])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    custom = out["files"][0]["custom"]
    head = load_head(path)
    assert out["head"] == head.head_id == custom["head"]
    expected = head.scores(embed(patch_model, audio.load(clip))[0])
    assert len(custom["windows"]) == len(expected)
    assert custom["scores"]["scream"] == pytest.approx(float(expected[:, 1].max()), abs=1e-3)
    streamed = np.array([[w[c] for c in head.classes] for w in custom["windows"]])
    np.testing.assert_allclose(streamed, expected, atol=2e-3)
    decided = [c for c in head.classes if custom["scores"][c] >= head.thresholds[c]]
    assert custom["detected"] == decided

    held = write_subset(split.held_out[:40], tmp_path / "held")
    assert main(["eval-head", str(path), str(held), "--json", "--model-dir", str(MODELS)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["clips"] == 40 and report["head"] == head.head_id
    for c in head.classes:
        stats = report["per_class"][c]
        assert stats["clips"] == sum(e.label == c for e in split.held_out[:40])
        assert {"precision", "recall", "recall_at_p95", "auc"} <= set(stats)
    assert sum(map(sum, report["confusion"]["matrix"])) == 40


def test_train_refuses_data_without_background(tmp_path: Path) -> None:
    import soundfile as sf

    (tmp_path / "only" / "bang").mkdir(parents=True)
    sf.write(tmp_path / "only" / "bang" / "a.wav", np.zeros(8000, np.float32), 16000)
    code = main(["train", str(tmp_path / "only"), "--out", str(tmp_path / "h.json")])
    assert code == 2
    assert not (tmp_path / "h.json").exists()
