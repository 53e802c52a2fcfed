"""Store-and-forward under failure, end to end: edge agent -> private Mosquitto -> ingest
-> SQLite. The broker is SIGKILLed mid-stream, the agent is SIGKILLed mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.models import AckWatermark, Clip, Event, Heartbeat, Inference
from earwitness.edge.agent import EdgeAgent
from earwitness.edge.outbox import SEQ_BLOCK
from tests.conftest import ESC50, MODELS
from tests.edge_helpers import ArraySource, edge_config, noise
from tests.ingest_helpers import ingest_settings, running_ingest, wait_for
from tests.services import PrivateBroker, spawn, unique

pytestmark = pytest.mark.mqtt


def stored_seqs(engine, device: str = "dev1") -> list[int]:  # type: ignore[no-untyped-def]
    seqs: list[int] = []
    with engine.connect() as conn:
        for model in (Inference, Event, Clip, Heartbeat):
            seqs += conn.execute(select(model.seq).where(model.device_id == device)).scalars()
    return seqs


def inference_seqs_in_arrival_order(engine) -> list[int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return list(conn.execute(select(Inference.seq).order_by(Inference.id)).scalars())


def watermark(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(AckWatermark.seq)).scalar_one_or_none() or -1)


def test_broker_outage_loses_nothing(tmp_path: Path) -> None:
    broker = PrivateBroker()
    broker.start()
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = make_engine(url)
    upgrade(engine)
    site = unique("s")
    try:
        with running_ingest(ingest_settings(url, site, port=broker.port), tmp_path / "clips"):
            cfg = edge_config(tmp_path, site, port=broker.port)
            agent = EdgeAgent(cfg, source=ArraySource(noise(90), speed=15))  # ~6 s, 186 windows
            agent.start()
            wait_for(lambda: len(stored_seqs(engine)) > 20, what="stream under way")
            broker.kill()  # SIGKILL: whatever it had not written to disk is gone
            outage_started = agent.outbox.stats().next_seq
            time.sleep(2.0)
            agent.send_heartbeat()
            assert not agent.publisher.connected
            broker.start()
            wait_for(lambda: agent.finished, timeout=60, what="source finished")
            # The agent's own final heartbeat is the last message it writes.
            assert agent.final_heartbeat.wait(5)
            total = agent.outbox.stats().next_seq
            wait_for(lambda: agent.drained(), timeout=60, what="outbox drained by acks")
            agent.stop()
        seqs = stored_seqs(engine)
        assert sorted(seqs) == list(range(total)), "every seq exactly once, none lost"
        assert watermark(engine) == total - 1
        backlog = [s for s in inference_seqs_in_arrival_order(engine) if s >= outage_started]
        assert backlog, "messages were produced during the outage"
    finally:
        broker.cleanup()
        engine.dispose()


def _agent_process(config: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EARWITNESS_MODEL_DIR": str(MODELS)}
    return spawn([sys.executable, "-m", "earwitness", "edge", "--config", str(config), *extra], env)


def _outbox_rows(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(path) as db:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    except sqlite3.OperationalError:  # the agent has created the file but not the table yet
        return 0


def test_sigkilled_agent_keeps_its_outbox(tmp_path: Path) -> None:
    broker = PrivateBroker()
    broker.start()
    site = unique("s")
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    import soundfile as sf

    sf.write(audio_dir / "noise.wav", noise(600), 16000)
    outbox = tmp_path / "outbox.db"
    config = tmp_path / "edge.yaml"
    base = {
        "device": {"id": "dev1", "site": site, "lat": 1.0, "lon": 2.0},
        "source": {"kind": "file", "path": str(audio_dir), "realtime": True},
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
        },
        "outbox": {"path": str(outbox), "ack_timeout_s": 2, "drain_rate": 0},
        "health": {"port": 0},
        "heartbeat_s": 1,
    }
    config.write_text(yaml.safe_dump(base))
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    engine = make_engine(url)
    upgrade(engine)
    try:
        # No ingest yet: nothing is acknowledged, everything stays in the outbox.
        proc = _agent_process(config)
        wait_for(
            lambda: outbox.exists() and _outbox_rows(outbox) >= 8, timeout=30, what="outbox filling"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        before = _outbox_rows(outbox)
        assert before >= 8
        with running_ingest(ingest_settings(url, site, port=broker.port), tmp_path / "clips"):
            proc = _agent_process(config)  # same outbox, same epoch
            wait_for(
                lambda: len(set(stored_seqs(engine))) >= before,
                timeout=30,
                what="pre-kill messages delivered",
            )
            wait_for(
                lambda: watermark(engine) >= before - 1,
                timeout=30,
                what="watermark past the pre-kill messages",
            )
            # The killed run's unused seq reservation is a gap (the new run starts at
            # the next block); the heartbeat's outbox_min_seq closes it, so the
            # acknowledgements move on past it and the outbox drains.
            wait_for(
                lambda: watermark(engine) >= SEQ_BLOCK,
                timeout=30,
                what="watermark past the reservation gap",
            )
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        seqs = stored_seqs(engine)
        assert len(seqs) == len(set(seqs))
        assert set(range(before)) <= set(seqs)
    finally:
        broker.cleanup()
        engine.dispose()


def test_sigterm_exits_within_five_seconds(tmp_path: Path) -> None:
    audio_dir = tmp_path / "audio"
    audio_dir.mkdir()
    import soundfile as sf

    sf.write(audio_dir / "noise.wav", noise(30), 16000)
    config = tmp_path / "edge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "device": {"id": "dev1", "site": unique("s")},
                "source": {"kind": "file", "path": str(audio_dir), "realtime": True, "loop": True},
                "mqtt": {"host": "127.0.0.1", "port": 1},  # unreachable: must not delay the exit
                "outbox": {"path": str(tmp_path / "outbox.db")},
                "health": {"port": 0},
            }
        )
    )
    proc = _agent_process(config)
    wait_for(
        lambda: (tmp_path / "outbox.db").exists() and _outbox_rows(tmp_path / "outbox.db") > 2,
        timeout=30,
        what="agent running",
    )
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert time.monotonic() - t0 < 5.0


def test_bad_config_file_key_refuses_to_start(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text("device:\n  id: dev1\n  nmae: kitchen\noutbox:\n  max_bytes: -5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "earwitness", "edge", "--config", str(config), "--validate-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "line 3: device.nmae: unknown key" in proc.stderr
    assert "line 5: outbox.max_bytes" in proc.stderr
    config.write_text("device:\n  id: dev1\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "earwitness",
            "edge",
            "--config",
            str(config),
            "--validate-config",
            "--source",
            str(next(ESC50.glob("*.flac"))),  # --validate-config checks the source exists
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
