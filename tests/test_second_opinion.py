"""Second opinion on real ESC-50 clips with the real reference model, on SQLite and MariaDB."""

from __future__ import annotations

import csv
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.models import Clip, Inference, SecondOpinion
from earwitness.cloud.db.repo import clips as clip_queue
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.secondopinion.backends import YamnetReference
from earwitness.cloud.secondopinion.worker import Worker
from earwitness.cloud.trust import trust_figures, wilson
from earwitness.shared import audio
from earwitness.shared.messages import LabelScore
from earwitness.shared.topics import Kind
from tests.conftest import ESC50, MODELS
from tests.factories import Device, wire
from tests.services import mariadb_database


@pytest.fixture(scope="module")
def reference() -> YamnetReference:
    return YamnetReference(MODELS)


def _esc50(categories: list[str]) -> list[Path]:
    with (ESC50 / "meta.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    return [
        ESC50 / r["filename"]
        for c in categories
        for r in [r for r in rows if r["category"] == c][:2]
    ]


def store_clips(engine, store_dir: Path, patch_model, class_map, waves: list[np.ndarray]) -> None:  # type: ignore[no-untyped-def]
    """Each wave becomes an inference and a clip from one device, as the edge sends them."""
    from earwitness.shared.labels import LabelGroups

    groups = LabelGroups.load(class_map)
    dev = Device("site1", "dev1", t0=datetime.now(UTC) - timedelta(hours=1))
    batch = []
    for i, wave in enumerate(waves):
        scores = np.mean([w.scores for w in patch_model.classify(wave)], axis=0)
        top = [
            LabelScore(index=c.index, mid=c.mid, name=c.name, score=round(float(s), 4))
            for c, s in class_map.top_k(scores, 3)
        ]
        inf = dev.inference(2 * i, top[0])
        edge_groups = {k: round(min(1.0, v), 4) for k, v in groups.scores(scores).items()}
        clip = dev.clip(2 * i + 1, flac=audio.encode_flac(wave)).model_copy(
            update={"edge_top": top, "window_start": inf.window_start, "edge_groups": edge_groups}
        )
        batch += [
            RawMessage(dev.topic(Kind.INFERENCE), wire(inf), datetime.now(UTC)),
            RawMessage(dev.topic(Kind.CLIP), wire(clip), datetime.now(UTC)),
        ]
    result = BatchStore(engine).store(prepare(batch, FileClipStore(store_dir), Limits(2**19, 4096)))
    assert result.dead_letters == 0


def count(engine, model, *where) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model).where(*where)).scalar_one())


def test_esc50_clips_get_second_opinions(
    engine, tmp_path: Path, reference, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    files = _esc50(["siren", "dog", "rain", "church_bells"])
    waves = [audio.load(f)[: 16000 * 3] for f in files]
    store_clips(engine, tmp_path / "clips", patch_model, class_map, waves)
    worker = Worker(engine, FileClipStore(tmp_path / "clips"), [reference])
    while worker.run_once(limit=4):
        pass
    assert worker.processed == len(files) and worker.failed == 0
    assert count(engine, Clip, Clip.status == "done") == len(files)
    with engine.connect() as conn:
        opinions = conn.execute(select(SecondOpinion)).all()
        inferences = conn.execute(select(Inference)).all()
    assert len(opinions) == len(files)
    assert all(
        o.backend == "yamnet-reference" and o.model_id.startswith("yamnet-waveform@")
        for o in opinions
    )
    # Real recordings: top-1 is a weak check (near ties such as Animal / Dog); the label
    # group is the clip-level decision that should agree.
    # group_agree is None when neither model puts the clip in any group (rain, bells).
    assert sum(o.group_agree is not False for o in opinions) >= len(files) - 1
    assert sum(bool(o.group_agree) for o in opinions) >= 3  # sirens -> alarm, dogs -> animal
    assert sum(o.top1_agree for o in opinions) >= len(files) // 2
    assert all(i.second_label is not None and i.second_agree is not None for i in inferences)
    figures = {f.key: f for f in trust_figures(engine)}
    assert sum(f.n for f in figures.values()) == len(files)


def test_corrupt_clip_fails_after_three_attempts(
    engine, tmp_path: Path, reference, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    store_clips(
        engine, tmp_path / "clips", patch_model, class_map, [np.zeros(16000, np.float32) + 0.01]
    )
    bad = tmp_path / "clips" / "ba" / "d0"
    bad.mkdir(parents=True)
    key = "ba/d0/" + "bad0" * 16 + ".flac"
    (tmp_path / "clips" / key).write_bytes(b"fLaC" + b"\x01" * 100)
    with engine.begin() as conn:
        conn.execute(update(Clip).values(storage_key=key))
    worker = Worker(engine, FileClipStore(tmp_path / "clips"), [reference])
    for _ in range(5):
        worker.run_once()
    with engine.connect() as conn:
        clip = conn.execute(select(Clip)).one()
    assert clip.status == "failed" and clip.attempts == 3
    assert "not a readable audio file" in (clip.error or "")
    assert worker.failed == 1
    assert worker.run_once() == 0  # nothing left, worker fine


def test_dead_worker_lease_expires(
    engine, tmp_path: Path, reference, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    store_clips(
        engine, tmp_path / "clips", patch_model, class_map, [np.full(16000, 0.01, np.float32)]
    )
    with transaction(engine) as session:
        claimed = clip_queue.claim(session, "worker-that-dies", lease_s=0.5)
    assert len(claimed) == 1
    other = Worker(engine, FileClipStore(tmp_path / "clips"), [reference], name="survivor")
    assert other.run_once() == 0  # still leased
    time.sleep(0.7)
    assert other.run_once() == 1
    with engine.connect() as conn:
        clip = conn.execute(select(Clip)).one()
    assert clip.status == "done" and clip.worker == "survivor" and clip.attempts == 2


@pytest.mark.mariadb
def test_two_workers_process_every_clip_exactly_once(
    tmp_path: Path, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    from earwitness.cloud.db.engine import make_engine
    from earwitness.cloud.db.migrate import upgrade

    rng = np.random.default_rng(0)
    waves = [(0.05 * rng.standard_normal(8000)).astype(np.float32) for _ in range(200)]
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        store_clips(engine, tmp_path / "clips", patch_model, class_map, waves)
        # Each worker's first clip waits until the other worker has claimed clips of its
        # own: both hold claims at once, whatever the threads' timing on a loaded machine.
        both_claimed = threading.Barrier(2, timeout=60)

        class Rendezvous:
            def __init__(self) -> None:
                self.inner, self.met = YamnetReference(MODELS), False

            def score(self, wave: np.ndarray):  # type: ignore[no-untyped-def]
                if not self.met:
                    self.met = True
                    both_claimed.wait()
                return self.inner.score(wave)

        workers = [
            Worker(engine, FileClipStore(tmp_path / "clips"), [Rendezvous()], name=f"w{i}")  # type: ignore[list-item]
            for i in range(2)
        ]

        def open_clips() -> int:
            return count(engine, Clip, Clip.status.in_(["pending", "claimed"]))

        def drain(w: Worker) -> None:
            # An empty claim is not the end (the other worker may hold the rest): a
            # worker stops when no clip is left open, as the service's loop idles.
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if not w.run_once(limit=5):
                    if not open_clips():
                        return
                    time.sleep(0.02)

        threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sum(w.processed for w in workers) == 200
        assert all(w.processed > 0 for w in workers)
        assert count(engine, SecondOpinion) == 200
        assert count(engine, Clip, Clip.status == "done", Clip.attempts == 1) == 200
        engine.dispose()


def test_wilson_interval() -> None:
    low, high = wilson(8, 10)
    assert 0.49 < low < 0.5 and 0.94 < high < 0.95
    assert wilson(0, 0) == (0.0, 1.0)
