"""The edge agent end to end: real model, real Mosquitto (shared or private), real audio."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from threadpoolctl import threadpool_info, threadpool_limits

from earwitness.edge.agent import EdgeAgent
from earwitness.shared import audio
from earwitness.shared.messages import (
    ClipMessage,
    EventMessage,
    HeartbeatMessage,
    InferenceMessage,
    decode,
)
from tests.conftest import ESC50, SPEECH
from tests.edge_helpers import (
    ArraySource,
    Collector,
    edge_config,
    noise,
    run_until_finished,
    signed_config,
)
from tests.ingest_helpers import wait_for
from tests.services import unique

pytestmark = pytest.mark.mqtt


def _esc50(category: str) -> Path:
    import csv

    with (ESC50 / "meta.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["category"] == category:
                return ESC50 / row["filename"]
    raise AssertionError(category)


def _final_heartbeat(collector: Collector, agent: EdgeAgent) -> HeartbeatMessage | None:
    """The heartbeat that counts every window of the finished source, if it arrived."""
    for topic, payload in collector.of_kind("heartbeat"):
        hb = decode(topic, payload)
        if isinstance(hb, HeartbeatMessage) and hb.windows_processed == agent.windows:
            return hb
    return None


@pytest.mark.parametrize(("category", "group"), [("siren", "alarm"), ("dog", "animal")])
def test_replay_esc50_clip_gives_events_inferences_and_a_clip(
    tmp_path: Path, category: str, group: str
) -> None:
    site = unique("s")
    src = tmp_path / "audio"
    src.mkdir()
    shutil.copy(_esc50(category), src)
    cfg = edge_config(
        src,
        site,
        runtime={"detection": {"triggers": [{"group": group, "threshold": 0.4}], "min_windows": 2}},
    )
    collector = Collector(site)
    threadpool_limits(limits=2, user_api="blas")  # what numpy starts with on 2 cores
    agent = EdgeAgent(cfg)
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    agent.start()
    try:
        run_until_finished(agent)
        # The agent sends its final counters itself once the source is done.
        assert agent.final_heartbeat.wait(5)
        wait_for(lambda: _final_heartbeat(collector, agent) is not None, what="final heartbeat")
    finally:
        agent.stop()
    received = [decode(t, p) for t, p in collector.messages if not t.endswith("/status")]
    # At least once: on a loaded machine an ack can be overdue and a row sent again with
    # the same id (ingest stores it once). Count what was published, once per id.
    decoded, seen = [], set()
    for m in received:
        if m.id not in seen:
            seen.add(m.id)
            decoded.append(m)
    inferences = [m for m in decoded if isinstance(m, InferenceMessage)]
    events = [m for m in decoded if isinstance(m, EventMessage)]
    clips = [m for m in decoded if isinstance(m, ClipMessage)]
    assert len(inferences) == 10  # 5 s -> 10 windows, every one published
    # Replayed as fast as possible, yet no window starts after it was processed (the
    # message's ts), and the windows keep their true 0.48 s spacing.
    assert all(m.window_start <= m.ts for m in inferences)
    starts = sorted(m.window_start for m in inferences)
    assert {round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(starts)} == {0.48}
    assert all(m.location is not None and m.model.startswith("yamnet-int8@") for m in inferences)
    assert {e.group for e in events} == {group}
    assert events[0].phase == "start" and events[-1].phase == "end"
    assert clips, "an event start must produce a clip"
    clip = clips[0]
    assert clip.reason == "event" and clip.event_id == events[0].event_id
    wave = audio.decode_bytes(clip.audio(), "clip")
    assert abs(wave.size / 16000 - clip.duration_s) < 0.01
    assert 1.5 < clip.duration_s < 8
    seqs = sorted(m.seq for m in decoded if hasattr(m, "seq"))
    assert seqs == list(range(len(seqs)))  # one sequence, no gaps
    collector.close()


def test_speech_clips_are_never_published(tmp_path: Path) -> None:
    site = unique("s")
    cfg = edge_config(
        SPEECH,
        site,
        runtime={
            "clips": {"every_n": 1, "low_confidence": None},
            "detection": {"triggers": [{"group": "distress", "threshold": 0.4}]},
        },
        outbox={"path": str(tmp_path / "outbox.db")},
    )
    collector = Collector(site)
    threadpool_limits(limits=2, user_api="blas")  # what numpy starts with on 2 cores
    agent = EdgeAgent(cfg)
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    agent.start()
    try:
        run_until_finished(agent)
        # The agent sends its final counters itself once the source is done.
        assert agent.final_heartbeat.wait(5)
        wait_for(lambda: _final_heartbeat(collector, agent) is not None, what="final heartbeat")
    finally:
        agent.stop()
    assert collector.of_kind("inference"), "speech windows are still classified and published"
    assert collector.of_kind("clip") == []
    heartbeat = _final_heartbeat(collector, agent)
    assert isinstance(heartbeat, HeartbeatMessage)
    assert heartbeat.clips_blocked_privacy >= 10 and heartbeat.clips_sent == 0
    # Nothing of the audio was written: the outbox never held a clip row.
    import sqlite3

    with sqlite3.connect(tmp_path / "outbox.db") as db:
        assert db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'clip'").fetchone()[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("outbox.db")) == []
    collector.close()


def test_remote_config_only_signed_newer_and_for_this_device_is_applied(
    tmp_path: Path,
) -> None:
    """Over the real broker: unsigned, wrong key, another device's, invalid, a replayed
    lower version and (pinned) privacy weakening are all refused with the reason in the
    status; a valid signed config applies; it survives a restart; the retained copy
    delivered again on reconnect changes nothing."""
    site = unique("s")
    cfg = edge_config(tmp_path, site, remote_config={"pin_privacy": True})
    collector = Collector(site)
    agent = EdgeAgent(cfg, source=ArraySource(noise(120), speed=10))
    agent.start()
    topic = f"earwitness/v1/{site}/dev1/config"
    rogue = Ed25519PrivateKey.generate()

    def last_status() -> dict[str, Any]:
        statuses = collector.statuses()
        return statuses[-1] if statuses else {}

    def refused(payload: bytes, reason: str) -> None:
        collector.publish(topic, payload, retain=True)
        wait_for(
            lambda: reason in (last_status().get("config_error") or ""),
            what=f"refusal: {reason}",
        )

    try:
        wait_for(lambda: agent.publisher.connected, what="agent connected")
        windows_before = agent.windows
        refused(b"{not json", "not JSON")
        refused(b'{"version": 9, "privacy": {"enabled": false}}', "not signed")
        refused(
            signed_config(site, "dev1", 9, {"privacy": {"enabled": False}}, key=rogue),
            "does not verify",
        )
        refused(signed_config(site, "dev2", 9, {}), f"for {site}/dev2, not {site}/dev1")
        refused(
            signed_config(site, "dev1", 9, {"detection": {"triggers": [{"group": "sirens"}]}}),
            "unknown group 'sirens'",
        )
        refused(signed_config(site, "dev1", 9, {"detectoin": {}}), "detectoin: unknown key")
        refused(
            signed_config(site, "dev1", 9, {"privacy": {"enabled": False}}),
            "privacy is pinned locally (privacy.enabled false)",
        )
        refused(
            signed_config(site, "dev1", 9, {"privacy": {"speech_threshold": 0.9}}),
            "privacy.speech_threshold 0.9 above the local",
        )
        assert agent._runtime.settings.version == 0  # the old config is still in force
        assert agent.metrics.total("config_rejected_total") == 8
        wait_for(lambda: agent.windows > windows_before + 5, what="agent keeps running")
        good = signed_config(site, "dev1", 3, {"publish": {"inference": "none"}})
        collector.publish(topic, good, retain=True)
        wait_for(lambda: last_status().get("config_version") == 3, what="applied")
        assert "config_error" not in last_status()
        time.sleep(0.5)
        distinct = lambda: len({p for _t, p in collector.of_kind("inference")})  # noqa: E731
        count = distinct()  # (no ingest here: unacknowledged messages are re-sent, same bytes)
        time.sleep(1.0)
        assert distinct() == count  # policy 'none' took effect
        refused(signed_config(site, "dev1", 2, {}), "version 2 is not newer than the version")
        agent.apply_remote_config(good)  # the retained copy again: not an error, no change
        assert agent.config_error is not None and agent._runtime.settings.version == 3
    finally:
        agent.stop()
        collector.publish(topic, b"", retain=True)  # clear it
        collector.close()
    again = EdgeAgent(cfg, source=ArraySource(noise(1)))
    try:
        assert again._runtime.settings.version == 3, "the accepted config survives a restart"
        assert again._runtime.settings.publish.inference == "none"
    finally:
        again.outbox.close()


def test_slow_inference_drops_windows_but_capture_never_waits(tmp_path: Path) -> None:
    site = unique("s")
    cfg = edge_config(tmp_path, site, max_backlog_s=2)
    source = ArraySource(noise(60), speed=20)  # one hop every 24 ms
    agent = EdgeAgent(cfg, source=source)
    real = agent.model.run_patch

    def slow(features):  # type: ignore[no-untyped-def]
        time.sleep(0.06)
        return real(features)

    agent.model.run_patch = slow  # type: ignore[method-assign]
    agent.start()
    try:
        wait_for(lambda: source.finished_at is not None, timeout=30, what="capture finished")
        assert source.finished_at is not None and source.finished_at < 3.6  # 60 s / 20x + slack
        assert agent.buffer.dropped_windows > 20
        run_until_finished(agent)
        counters = agent.counters()
        assert counters["windows_dropped"] >= agent.buffer.dropped_windows
        # 60 s make 124 windows: each was either processed or counted as dropped.
        assert 120 <= counters["windows_processed"] + counters["windows_dropped"] <= 126
    finally:
        agent.stop()


def test_silence_starts_no_event(tmp_path: Path) -> None:
    site = unique("s")
    cfg = edge_config(
        tmp_path,
        site,
        runtime={
            "detection": {"triggers": [{"label": "Silence", "threshold": 0.1}], "min_dbfs": -60}
        },
    )
    agent = EdgeAgent(cfg, source=ArraySource(np.zeros(16000 * 5, np.float32)))
    agent.start()
    try:
        run_until_finished(agent)
        assert agent.events_sent == 0  # YAMNet says "Silence" loudly, but the gate holds
    finally:
        agent.stop()
