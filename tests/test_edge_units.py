"""Edge building blocks with synthetic inputs: capture buffer, ring, levels, events,
outbox bounds and acknowledgement."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from earwitness.edge.capture import AudioRing, CaptureBuffer
from earwitness.edge.config import DetectionSettings, Trigger
from earwitness.edge.events import EventDetector
from earwitness.edge.levels import FLOOR_DBFS, RunningLeq, dbfs
from earwitness.edge.outbox import Outbox
from earwitness.shared.frontend import PATCH_HOP_SAMPLES
from earwitness.shared.labels import LabelGroups

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_capture_buffer_drops_whole_hops_and_never_blocks() -> None:
    buf = CaptureBuffer(max_samples=16000 * 10)
    chunk = np.zeros(1600, np.float32)
    t = time.perf_counter()
    for _ in range(600):  # 60 s of audio, nobody consuming
        buf.put(chunk)
    assert time.perf_counter() - t < 0.5
    assert buf.depth_samples <= 16000 * 10
    assert buf.dropped_samples % PATCH_HOP_SAMPLES == 0
    assert buf.dropped_windows == (600 * 1600 - buf.depth_samples) // PATCH_HOP_SAMPLES
    first = buf.get(0.1)
    assert first is not None and first.start == buf.dropped_samples  # positions reveal the gap


def test_capture_buffer_close_wakes_the_consumer() -> None:
    buf = CaptureBuffer(16000)
    threading.Timer(0.1, buf.close).start()
    t = time.perf_counter()
    assert buf.get(5.0) is None
    assert time.perf_counter() - t < 2 and buf.finished


def test_audio_ring_wraps_and_fills_gaps_with_silence() -> None:
    ring = AudioRing(1000)
    ring.write(0, np.arange(800, dtype=np.float32))
    ring.write(800, np.arange(800, 1400, dtype=np.float32))
    assert ring.start == 400 and ring.end == 1400
    np.testing.assert_array_equal(ring.read(500, 1300), np.arange(500, 1300, dtype=np.float32))
    assert ring.read(0, 100).size == 0  # overwritten
    ring.write(1600, np.ones(100, np.float32))  # 200 samples were dropped
    gap = ring.read(1400, 1700)
    assert (gap[:200] == 0).all() and (gap[200:] == 1).all()


def test_levels() -> None:
    assert dbfs(np.zeros(100, np.float32)) == FLOOR_DBFS
    assert dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    sine = np.sin(np.linspace(0, 200 * np.pi, 16000)).astype(np.float32)
    assert dbfs(sine) == pytest.approx(-3.01, abs=0.02)
    leq = RunningLeq(windows=4)
    for level in (-20, -20, -20, -20):
        leq.add(level)
    assert leq.value == pytest.approx(-20)
    leq.add(-10)  # energy average, not level average
    assert leq.value == pytest.approx(10 * np.log10((3 * 0.01 + 0.1) / 4))


def _detector(class_map, **kw):  # type: ignore[no-untyped-def]
    settings = DetectionSettings(
        triggers=[Trigger(group="alarm", threshold=0.5, hysteresis=0.2)],
        min_windows=2,
        cooldown_s=2.0,
        min_dbfs=-50,
        update_every_s=1.0,
        **kw,
    )
    return EventDetector(settings, class_map, LabelGroups.load(class_map))


def _run(det, class_map, seq):  # type: ignore[no-untyped-def]
    siren = class_map.find("Siren").index
    out = []
    for i, (score, level) in enumerate(seq):
        scores = np.zeros(521, np.float32)
        scores[siren] = score
        groups = {"alarm": score}
        out += [
            (i, u)
            for u in det.update(T0 + timedelta(seconds=0.48 * i), 0.96, scores, groups, level)
        ]
    return out


def test_event_needs_min_windows_and_ends_with_hysteresis(class_map) -> None:  # type: ignore[no-untyped-def]
    det = _detector(class_map)
    seq = [
        (0.6, -20),
        (0.2, -20),
        (0.6, -20),
        (0.7, -20),
        (0.4, -20),
        (0.35, -20),
        (0.9, -20),
        (0.1, -20),
    ]
    out = _run(det, class_map, seq)
    phases = [(i, u.phase) for i, u in out]
    # one positive then a miss: no event; two in a row start it; 0.4 and 0.35 stay above
    # 0.5 - 0.2 (hysteresis); update after >= 1 s; 0.1 ends it.
    assert phases[0] == (3, "start")
    assert phases[-1] == (7, "end")
    start, end = out[0][1], out[-1][1]
    assert start.started_at == T0 + timedelta(seconds=0.96)  # the first positive window
    assert end.peak_score == pytest.approx(0.9) and end.windows == 5
    assert any(p == "update" for _, p in phases)


def test_cooldown_and_volume_gate(class_map) -> None:  # type: ignore[no-untyped-def]
    det = _detector(class_map)
    loud, quiet = -20, -70
    seq = [
        (0.9, loud),
        (0.9, loud),
        (0.1, loud),  # event 1 ends at window 2
        (0.9, loud),
        (0.9, loud),  # within 2 s cooldown: ignored
        (0.9, quiet),
        (0.9, quiet),
        (0.9, quiet),
        (0.9, quiet),
        (0.9, quiet),  # silent
        (0.9, loud),
        (0.9, loud),
    ]  # new event
    phases = [(i, u.phase) for i, u in _run(det, class_map, seq)]
    assert phases == [(1, "start"), (2, "end"), (11, "start")]


def test_unknown_trigger_group_is_a_config_error(class_map) -> None:  # type: ignore[no-untyped-def]
    from earwitness.shared.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown group 'sirens'"):
        EventDetector(
            DetectionSettings(triggers=[Trigger(group="sirens")]),
            class_map,
            LabelGroups.load(class_map),
        )


def test_outbox_survives_reopen_and_acks(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, 10 * 2**20, 3600)
    epoch = box.epoch
    for i in range(5):
        box.append("inference", "t", lambda seq, i=i: f"m{seq}".encode())
    box.close()
    box = Outbox(path, 10 * 2**20, 3600)
    assert box.epoch == epoch
    assert [r.seq for r in box.due(10, 30)] == [0, 1, 2, 3, 4]
    assert box.append("inference", "t", lambda seq: b"x") == 5  # seq continues
    assert box.ack("otherepoch", 10) == 0
    box.mark_sent([0, 1, 2])
    assert box.ack(epoch, 2) == 3
    assert box.stats().min_seq == 3 and box.stats().rows == 3
    box.mark_sent([3, 4, 5])
    assert box.due(10, 30) == []
    assert [r.seq for r in box.due(10, 0)] == [3, 4, 5]  # ack timeout 0: all due again
    box.close()


def test_outbox_ignores_forged_acks_and_keeps_taking_real_ones(tmp_path: Path) -> None:
    """An ack above what was sent, or one covering rows never sent, deletes nothing and
    does not stop the real acks that follow (a forged seq = 10**9 once bricked outboxes)."""
    path = tmp_path / "o.db"
    box = Outbox(path, 10 * 2**20, 3600)
    for _ in range(10):
        box.append("inference", "t", lambda seq: b"m")
    box.mark_sent([5, 6, 7, 8, 9])  # live first: 5..9 went out, 0..4 wait in the backlog
    assert box.ack(box.epoch, 1_000_000_000) == 0  # above anything sent
    assert box.ack(box.epoch, 7) == 0  # would delete 0..4, which were never sent
    assert box.acks_rejected == 2 and box.stats().rows == 10 and box.acked_seq == -1
    box.mark_sent([0, 1, 2, 3, 4])
    assert box.ack(box.epoch, 7) == 8  # the real ack still works
    box.close()
    box = Outbox(path, 10 * 2**20, 3600)  # what was sent survives a restart
    assert box.sent_upto == 9
    assert box.ack(box.epoch, 10) == 0 and box.ack(box.epoch, 9) == 2
    box.close()


def test_outbox_full_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 2**20, 3600)
    payload = b"x" * 10_000
    t = time.perf_counter()
    for _ in range(300):  # 3 MB into a 1 MiB outbox
        box.append("clip", "t", lambda seq: payload)
    elapsed = time.perf_counter() - t
    stats = box.stats()
    assert stats.bytes <= 2**20
    assert stats.dropped == 300 - stats.rows
    assert stats.min_seq == stats.dropped  # the oldest went first
    assert elapsed < 5
    box.close()


def test_outbox_expires_old_rows(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 2**20, max_age_s=0.05)
    box.append("inference", "t", lambda seq: b"a")
    time.sleep(0.1)
    box.append("inference", "t", lambda seq: b"b")
    box.max_age_s = 0.05
    assert box.drop_expired() >= 1
    assert box.stats().dropped >= 1
    box.close()


def test_capture_buffer_backpressure_for_non_live_sources() -> None:
    buf = CaptureBuffer(max_samples=16000, backpressure=True)
    chunk = np.zeros(1600, np.float32)
    got: list[int] = []

    def consume() -> None:
        while (c := buf.get(1.0)) is not None:
            got.append(c.start)
            time.sleep(0.001)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for _ in range(200):  # 20 s of audio through a 1 s buffer: the producer waits instead
        buf.put(chunk)
        assert buf.depth_samples <= 16000 + 1600
    buf.close()
    consumer.join(10)
    assert buf.dropped_samples == 0
    assert got == [i * 1600 for i in range(200)]


def test_capture_buffer_backpressure_never_drops_uneven_chunks() -> None:
    """Files that are not whole seconds long (a short tail between 1 s chunks) through
    a buffer that is not a multiple of the chunk: every sample arrives, in order."""
    buf = CaptureBuffer(max_samples=16000, backpressure=True)
    sizes = [16000, 16000, 7000, 16000, 16000, 3333, 16000, 40000, 16000] * 10
    got: list[tuple[int, int]] = []

    def consume() -> None:
        while (c := buf.get(1.0)) is not None:
            got.append((c.start, c.samples.size))
            time.sleep(0.002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for n in sizes:
        buf.put(np.zeros(n, np.float32))
        assert buf.dropped_samples == 0
    buf.close()
    consumer.join(10)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    assert got == list(zip(starts, sizes, strict=True))
    assert buf.dropped_samples == 0


def test_capture_buffer_live_drops_whole_hops_when_behind() -> None:
    buf = CaptureBuffer(max_samples=16000)
    for _ in range(5):
        buf.put(np.zeros(7000, np.float32))  # nobody reads: 35,000 samples for 16,000
    assert buf.depth_samples <= 16000
    assert buf.dropped_samples % 7680 == 0 and buf.dropped_windows >= 2


def test_outbox_never_reuses_a_seq_after_everything_is_deleted(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, 10 * 2**20, 3600)
    for _ in range(4):
        box.append("inference", "t", lambda seq: b"x")
    box.ack(box.epoch, 3)  # the outbox is empty now
    box.close()
    box = Outbox(path, 10 * 2**20, 3600)
    assert box.append("inference", "t", lambda seq: b"y") == 4
    box.close()


def test_fleet_directory_fills_identity(tmp_path: Path) -> None:
    from earwitness.edge.config import load_edge_settings
    from earwitness.shared.errors import ConfigError

    directory = tmp_path / "devices.yaml"
    directory.write_text(
        "jetson-01: {site: vienna, name: Stephansplatz, lat: 48.2, lon: 16.37}\n"
        "broken: {lat: 500, lon: 0}\n"
    )
    cfg_file = tmp_path / "edge.yaml"
    cfg_file.write_text(
        f"device:\n  id: jetson-01\n  directory: {directory}\nsource:\n  kind: mic\n"
    )
    cfg = load_edge_settings(cfg_file)
    assert (cfg.device.site, cfg.device.name, cfg.device.lat) == ("vienna", "Stephansplatz", 48.2)
    cfg_file.write_text(f"device:\n  id: broken\n  directory: {directory}\nsource:\n  kind: mic\n")
    with pytest.raises(ConfigError, match="entry 'broken'"):
        load_edge_settings(cfg_file)


@pytest.mark.parametrize("speed", [10.0, 40.0])
def test_file_replay_at_n_times_real_time(tmp_path: Path, speed: float) -> None:
    """4 s of audio at N x real time takes about 4/N s, every sample delivered, and a
    paced replay faster than real time waits for inference (not live)."""
    import soundfile as sf

    from earwitness.edge.sources import FileSource

    sf.write(tmp_path / "a.wav", np.zeros(4 * 16000, np.float32), 16000)
    source = FileSource(tmp_path / "a.wav", realtime=True, loop=False, chunk_ms=100, speed=speed)
    assert source.live is False
    t0 = time.monotonic()
    total = sum(chunk.size for chunk in source.chunks(threading.Event()))
    elapsed = time.monotonic() - t0
    assert total == 4 * 16000
    assert 0.8 * 4 / speed <= elapsed < 4 / speed + 1.0
    assert FileSource(tmp_path / "a.wav", True, False, 100).live is True


def test_outbox_never_reissues_a_seq_after_its_newest_rows_are_lost(tmp_path: Path) -> None:
    """A power cut with synchronous=NORMAL may lose the newest rows after they were
    delivered; their seqs (and message ids) must not be issued again."""
    import shutil
    import sqlite3

    path = tmp_path / "o.db"
    box = Outbox(path, 10 * 2**20, 3600)
    for _ in range(10):
        box.append("inference", "t", lambda seq: b"x")
    # Copy the files as a crash would leave them (no clean close), then lose rows 5-9.
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    for f in tmp_path.glob("o.db*"):
        shutil.copy(f, crashed / f.name)
    box.close()
    db = sqlite3.connect(crashed / "o.db")
    db.execute("DELETE FROM outbox WHERE seq >= 5")
    db.commit()
    db.close()
    after_crash = Outbox(crashed / "o.db", 10 * 2**20, 3600)
    seq = after_crash.append("inference", "t", lambda seq: b"y")
    assert seq >= 10, "seq 5-9 may be stored in the cloud already"
    assert seq == 1000  # the next block: the gap 10-999 is closed by outbox_min_seq
    after_crash.close()
    clean = Outbox(path, 10 * 2**20, 3600)  # a clean close: no gap
    assert clean.append("inference", "t", lambda seq: b"z") == 10
    clean.close()
