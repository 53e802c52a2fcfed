"""Shared fixtures. Real model files come from ../shared (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EARWITNESS_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models"
ESC50 = SHARED / "audio" / "esc50"
SPEECH = SHARED / "audio" / "speech"


def pytest_configure(config: pytest.Config) -> None:
    # A missing data folder must fail the run, not skip tests: CI would otherwise go green
    # without ever running the model.
    if not (MODELS / "yamnet_spectra_in.tflite").is_file():
        raise pytest.UsageError(
            f"model files not found in {MODELS}: tests need ../shared (or $EARWITNESS_SHARED)"
        )
    os.environ.setdefault("EARWITNESS_MODEL_DIR", str(MODELS))


@pytest.fixture(autouse=True)
def _no_stray_processes():  # type: ignore[no-untyped-def]
    from tests.services import reap_spawned

    yield
    reap_spawned()


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return MODELS


@pytest.fixture(scope="session")
def patch_model():  # type: ignore[no-untyped-def]
    from earwitness.shared.runner import YamnetModel

    return YamnetModel.load("yamnet-int8", MODELS)


@pytest.fixture(scope="session")
def waveform_model():  # type: ignore[no-untyped-def]
    from earwitness.shared.runner import YamnetModel

    return YamnetModel.load("yamnet-waveform", MODELS)


@pytest.fixture(scope="session")
def class_map():  # type: ignore[no-untyped-def]
    from earwitness.shared.labels import ClassMap

    return ClassMap.load(MODELS / "yamnet_class_map.csv")


@pytest.fixture(scope="session")
def test_audio():  # type: ignore[no-untyped-def]
    import numpy as np

    raw = np.fromfile(MODELS / "yamnet_test_audio.bin", dtype="<i2")
    return raw.astype(np.float32) / 32768.0


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A migrated, empty database: SQLite file, or a fresh database on the real MariaDB."""
    from earwitness.cloud.db.engine import make_engine
    from earwitness.cloud.db.migrate import upgrade
    from tests.services import mariadb_database

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    from earwitness.cloud.db.engine import make_engine

    eng = make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture(scope="session")
def distress_head(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A head trained by `earwitness train` on a small group-split subset of the distress
    clips (the held-out groups stay unseen): (head file, Split)."""
    from earwitness.cli import main
    from tests.heads_helpers import distress_split, write_subset

    split = distress_split()
    base = tmp_path_factory.mktemp("head")
    data = write_subset(split.train, base / "train")
    out = base / "distress.json"
    assert main(["train", str(data), "--out", str(out), "--model-dir", str(MODELS)]) == 0
    return out, split


@pytest.fixture(scope="session")
def delta_head(distress_head):  # type: ignore[no-untyped-def]
    """The same training with `--delta` (format 3): (head file, Split)."""
    from earwitness.cli import main

    path, split = distress_head
    out = path.with_name("distress-delta.json")
    data = path.parent / "train"
    args = ["train", str(data), "--out", str(out), "--delta", "--model-dir", str(MODELS)]
    assert main(args) == 0
    return out, split
