"""A custom head on a device, end to end: real model, real Mosquitto, real ingest into
MariaDB, the API's custom filter. The audio is held-out distress recordings (groups the
head never trained on)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from earwitness.cloud.db.engine import make_engine, transaction
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.models import Inference
from earwitness.cloud.db.repo import inferences
from earwitness.cloud.db.repo.filters import Filters
from earwitness.cloud.heads.train import embed
from earwitness.edge.agent import EdgeAgent
from earwitness.shared import audio
from earwitness.shared.frontend import PATCH_HOP_SAMPLES
from earwitness.shared.heads import load_head
from earwitness.shared.messages import EventMessage, HeartbeatMessage, InferenceMessage, decode
from earwitness.shared.runner import YamnetModel
from tests.edge_helpers import ArraySource, Collector, noise, run_until_finished
from tests.heads_helpers import Split, head_trigger_config
from tests.ingest_helpers import ingest_settings, running_ingest, wait_for
from tests.services import mariadb_database, unique

pytestmark = pytest.mark.mqtt


def _detected_clip(model: YamnetModel, head_path: Path, split: Split, label: str) -> np.ndarray:
    """The held-out clip of ``label`` the head scores highest offline (the test checks
    that the streaming device path agrees with the offline one, not the head's quality)."""
    head = load_head(head_path)
    k = head.classes.index(label)
    best, best_score = None, -1.0
    for ex in split.held_out:
        if ex.label != label:
            continue
        wave = audio.load(ex.path)
        score = float(head.scores(embed(model, wave)[0])[:, k].max())
        if score > best_score:
            best, best_score = wave, score
    assert best is not None and best_score >= head.thresholds[label], (label, best_score)
    return best


def _on_window_grid(part: np.ndarray) -> np.ndarray:
    """``part`` padded with silence to whole window hops, so the next part starts where a
    device window starts and the device sees the windows `_detected_clip` scored."""
    return np.pad(part, (0, -len(part) % PATCH_HOP_SAMPLES))


@pytest.mark.parametrize("which", ["distress_head", "delta_head"])
def test_device_runs_a_head_and_the_cloud_stores_its_detections(
    which: str, request: pytest.FixtureRequest, patch_model: YamnetModel, tmp_path: Path
) -> None:
    head_path, split = request.getfixturevalue(which)
    head = load_head(head_path)
    scream = _detected_clip(patch_model, head_path, split, "scream")
    glass = _detected_clip(patch_model, head_path, split, "glass_break")
    gap = noise(3.0, level=0.002, seed=1)
    parts = [noise(1.0, 0.002), scream, gap, glass]
    wave = np.concatenate([*map(_on_window_grid, parts), noise(2.0, 0.002, seed=2)])
    site = unique("s")
    collector = Collector(site)
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        with running_ingest(ingest_settings(url, site), tmp_path / "clips"):
            cfg = head_trigger_config(tmp_path, site, head_path)
            agent = EdgeAgent(cfg, source=ArraySource(wave))
            agent.start()
            try:
                run_until_finished(agent)
                assert agent.final_heartbeat.wait(5)
                wait_for(agent.drained, timeout=30, what="every message stored and acked")
            finally:
                agent.stop()
        uplink = ("inference", "event", "clip", "heartbeat")
        decoded = [decode(t, p) for t, p in collector.messages if t.endswith(uplink)]
        collector.close()
        windows = [m for m in decoded if isinstance(m, InferenceMessage)]
        assert windows and all(set(m.custom or {}) == set(head.classes) for m in windows)
        # Window by window on the device (a delta head with each window's predecessor) as
        # the whole recording offline.
        offline = head.scores(embed(patch_model, wave)[0])
        n = min(len(windows), len(offline))
        assert n >= len(offline) - 1
        on_device = np.array([[(m.custom or {})[c] for c in head.classes] for m in windows])
        np.testing.assert_allclose(on_device[:n], offline[:n], atol=2e-3)
        detected = {c for m in windows for c in m.detected or []}
        assert detected == {"scream", "glass_break"}
        for m in windows:  # the device decides with the head's calibrated thresholds
            assert set(m.detected or []) == {
                c for c, v in (m.custom or {}).items() if v >= head.thresholds[c]
            }
        starts = [m for m in decoded if isinstance(m, EventMessage) and m.phase == "start"]
        assert {e.label for e in starts} == {"scream", "glass_break"}
        scream_start = min(e.started_at for e in starts if e.label == "scream")
        glass_start = min(e.started_at for e in starts if e.label == "glass_break")
        assert 2.0 < (glass_start - scream_start).total_seconds() < 12.0
        beats = [m for m in decoded if isinstance(m, HeartbeatMessage)]
        assert beats and all(b.heads == [head.head_id] for b in beats)

        with transaction(engine) as session:
            stored = dict(
                session.execute(
                    select(Inference.custom_label, func.count()).group_by(Inference.custom_label)
                ).all()
            )
            wanted = {
                c: sum(1 for m in windows if m.detected and m.detected[0] == c)
                for c in head.classes
            }
            assert {c: stored.get(c, 0) for c in head.classes} == wanted
            end = max(m.window_start for m in windows)
            f = Filters(custom="scream", end=end + timedelta(seconds=1)).check(1)
            rows, _cursor = inferences.page(session, f, 1000, None)
            assert len(rows) == wanted["scream"]
            assert all(r.custom_label == "scream" and r.custom_score for r in rows)
        engine.dispose()
