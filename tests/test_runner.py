from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from earwitness.shared.errors import ConfigError, ModelError
from earwitness.shared.labels import ClassMap, LabelGroups
from earwitness.shared.model_registry import REGISTRY, ModelSpec
from earwitness.shared.runner import YamnetModel


def test_patch_model_returns_scores_and_embedding(patch_model, test_audio) -> None:  # type: ignore[no-untyped-def]
    (window,) = patch_model.classify(test_audio)
    assert window.scores.shape == (521,)
    assert window.embedding is not None and window.embedding.shape == (1024,)
    assert window.embedding.dtype == np.float32
    assert (window.embedding >= 0).all()  # ReLU layer before the average pool
    assert window.embedding.max() > 0.5
    assert patch_model.model_id == "yamnet-int8@0a266465c467"


def test_embedding_differs_between_sounds(patch_model) -> None:  # type: ignore[no-untyped-def]
    from earwitness.shared import synth

    a = patch_model.classify(synth.siren(1.0))[0].embedding
    b = patch_model.classify(synth.noise(1.0))[0].embedding
    cos = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    assert cos < 0.9


def test_waveform_model_agrees_on_speech(waveform_model, class_map, test_audio) -> None:  # type: ignore[no-untyped-def]
    (window,) = waveform_model.classify(test_audio)
    assert window.embedding is None
    assert class_map[int(window.scores.argmax())].name == "Speech"


def test_both_models_window_the_same_way(patch_model, waveform_model) -> None:  # type: ignore[no-untyped-def]
    from earwitness.shared import audio
    from tests.conftest import ESC50

    # A real recording: on synthetic tones the two models disagree (out of distribution).
    wave = audio.load(sorted(ESC50.glob("*-42.flac"))[0])  # siren
    a = patch_model.classify(wave)
    b = waveform_model.classify(wave)
    assert [w.start_seconds for w in a] == [w.start_seconds for w in b]
    # Score vectors, not top-1, are the meaningful comparison between the two models.
    corr = np.corrcoef(np.mean([w.scores for w in a], 0), np.mean([w.scores for w in b], 0))[0, 1]
    assert corr > 0.9


def test_loading_a_non_model_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\0" * 1000)
    spec = ModelSpec(**{**REGISTRY["yamnet-int8"].__dict__, "size": 1000})
    with pytest.raises(ModelError, match=r"broken\.tflite: cannot load as a TFLite model"):
        YamnetModel(bad, spec)


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="earwitness models fetch yamnet-int8"):
        YamnetModel.load("yamnet-int8", tmp_path)


def test_label_groups_cover_the_required_sets(class_map) -> None:  # type: ignore[no-untyped-def]
    groups = LabelGroups.load(class_map)
    for name in ("speech", "distress", "alarm", "animal"):
        assert name in groups
    names = lambda g: {class_map[i].name for i in groups.groups[g].indices}  # noqa: E731
    assert "Speech" in names("speech")
    assert {"Screaming", "Shatter", "Gunshot, gunfire", "Explosion"} <= names("distress")
    assert {"Siren", "Smoke detector, smoke alarm", "Car alarm"} <= names("alarm")
    assert {"Dog", "Bird", "Frog"} <= names("animal")


def test_group_score_is_max_of_members(class_map) -> None:  # type: ignore[no-untyped-def]
    groups = LabelGroups.load(class_map)
    scores = np.zeros(521, np.float32)
    scores[class_map.find("Siren").index] = 0.7
    scores[class_map.find("Alarm").index] = 0.4
    scores[class_map.find("Speech").index] = 0.2
    g = groups.scores(scores)
    assert g["alarm"] == pytest.approx(0.7)
    assert g["speech"] == pytest.approx(0.2)
    assert g["distress"] == 0.0


def test_unknown_class_in_groups_file_is_named(tmp_path: Path, class_map) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "groups.yaml"
    f.write_text("groups:\n  pets:\n    classes: [Dog, Unicorn]\n")
    with pytest.raises(
        ConfigError, match=r"groups\.yaml: group 'pets' names unknown class 'Unicorn'"
    ):
        LabelGroups.load(class_map, f)


def test_class_map_by_mid_and_name(class_map) -> None:  # type: ignore[no-untyped-def]
    assert len(class_map) == 521
    assert class_map.find("/m/09x0r").name == "Speech"
    assert class_map.find("siren").mid == "/m/03kmc9"
    top = class_map.top_k(np.arange(521, dtype=np.float32), 3)
    assert [c.index for c, _ in top] == [520, 519, 518]


def test_class_map_missing_columns(tmp_path: Path) -> None:
    f = tmp_path / "map.csv"
    f.write_text("a,b\n1,2\n")
    with pytest.raises(ModelError, match="lacks columns"):
        ClassMap.load(f)
