"""Edge agent on this machine.

live     - `earwitness edge` on a looping file at 1x real time for --seconds: average CPU
           (% of one core) and peak RSS, with an ingest acknowledging (target <= 5 %, <= 150 MB)
drain    - an outbox pre-filled with 50,000 inference messages drained to the local
           Mosquitto, received by `mosquitto_sub` (target >= 5,000 messages/s)
replay   - ESC-50 replayed as fast as possible with publishing on (target >= 300x)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import ESC50, MODELS, machine

CLK_TCK = os.sysconf("SC_CLK_TCK")
ENV = {**os.environ, "EARWITNESS_MODEL_DIR": str(MODELS)}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def edge_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "earwitness", "edge", "--health-port", "0", *args]


def live(seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp())
    site = f"bench{uuid.uuid4().hex[:6]}"
    db = f"sqlite:///{tmp / 'cloud.db'}"
    subprocess.run(
        [sys.executable, "-m", "earwitness", "db", "upgrade", "--database-url", db],
        check=True,
        capture_output=True,
        env=ENV,
    )
    ingest = subprocess.Popen(
        [sys.executable, "-m", "earwitness", "ingest", "--database-url", db],
        env={
            **ENV,
            "EARWITNESS_INGEST__SITES": f'["{site}"]',
            "EARWITNESS_INGEST__CLIENT_ID": f"ingest-{site}",
            "EARWITNESS_INGEST__HEALTH_PORT": "0",
            "EARWITNESS_CLIPS__URL": str(tmp / "clips"),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent = subprocess.Popen(
        edge_cmd(
            "--source",
            str(ESC50),
            "--loop",
            "--site",
            site,
            "--device-id",
            "live",
            "--outbox",
            str(tmp / "outbox.db"),
        ),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(5)  # start-up: imports, model load
    c0, t0 = cpu_seconds(agent.pid), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu_seconds(agent.pid), time.monotonic()
    rss = peak_rss_mb(agent.pid)
    agent.terminate()
    agent.wait(10)
    ingest.terminate()
    ingest.wait(10)
    print(
        f"live 1x real time, {seconds:.0f} s (ESC-50 looping, every window published, ingest"
        f" acknowledging): CPU {100 * (c1 - c0) / (t1 - t0):.1f} % of one core,"
        f" peak RSS {rss:.0f} MB"
    )


def drain(n: int) -> None:
    from earwitness.edge.outbox import Outbox
    from earwitness.edge.publisher import Publisher
    from earwitness.shared.config import MqttSettings
    from earwitness.shared.messages import StatusMessage
    from earwitness.shared.topics import Kind
    from tests.factories import Device, wire

    tmp = Path(tempfile.mkdtemp())
    site = f"drain{uuid.uuid4().hex[:6]}"
    dev = Device(site, "d1")
    box = Outbox(tmp / "outbox.db", 2**30, 86400)
    template = [wire(dev.inference(i % 1000)) for i in range(1000)]
    t = time.perf_counter()
    for i in range(n):
        box.append(
            "inference",
            dev.topic(Kind.INFERENCE),
            lambda seq, i=i: template[i % 1000],
        )
    fill = time.perf_counter() - t

    def status(state: str) -> StatusMessage:
        from datetime import UTC, datetime

        return StatusMessage(
            id=uuid.uuid4().hex, site=site, device="d1", ts=datetime.now(UTC), state=state
        )  # type: ignore[arg-type]

    pub = Publisher(
        MqttSettings(),
        box,
        site,
        "d1",
        status,
        ack_timeout_s=600,
        drain_rate=0,
        on_config=lambda b: None,
    )
    acked = [0]

    def on_publish(*_args: object) -> None:
        acked[0] += 1

    pub.mqtt.client.on_publish = on_publish
    t0 = time.perf_counter()
    pub.start()
    while acked[0] < n + 1:  # + the retained "online" status
        time.sleep(0.01)
        if time.perf_counter() - t0 > 300:
            raise RuntimeError(f"only {acked[0]} of {n} acknowledged by the broker")
    elapsed = time.perf_counter() - t0
    pub.stop(0)
    print(
        f"outbox drain: {n:,} messages from SQLite to the local Mosquitto, every one"
        f" PUBACKed by the broker in {elapsed:.2f} s = {n / elapsed:,.0f} messages/s"
        f" (filling the outbox took {fill:.1f} s = {n / fill:,.0f} appends/s)"
    )


def replay(blas_threads: int = 1) -> None:
    import soundfile as sf

    seconds = sum(sf.info(str(f)).duration for f in ESC50.glob("*.flac"))
    tmp = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    proc = subprocess.run(
        edge_cmd(
            "--source",
            str(ESC50),
            "--fast",
            "--device-id",
            "replay",
            "--site",
            f"r{uuid.uuid4().hex[:6]}",
            "--outbox",
            str(tmp / "o.db"),
            "--exit-when-done",
            "--drain-timeout",
            "0",
        ),
        env={**ENV, "EARWITNESS_EDGE_MODEL__BLAS_THREADS": str(blas_threads)},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    import sqlite3

    with sqlite3.connect(tmp / "o.db") as db:
        published = db.execute("SELECT COUNT(*) FROM outbox WHERE kind='inference'").fetchone()[0]
    print(
        f"replay as fast as possible: {seconds:.0f} s of audio (256 ESC-50 files) in"
        f" {wall:.2f} s wall incl. start-up = {seconds / wall:.0f}x real time;"
        f" {published} inference messages written and published, {blas_threads} BLAS"
        f" thread(s): {wall / max(published, 1) * 1000:.2f} ms per window (exit {proc.returncode}:"
        f" 1 = not all acknowledged yet, as asked by --drain-timeout 0)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--only", choices=["live", "drain", "replay"])
    args = parser.parse_args()
    print(f"machine: {machine()}")
    if args.only in (None, "replay"):
        replay(blas_threads=1)  # the default (model.blas_threads)
        replay(blas_threads=os.cpu_count() or 1)  # numpy's own default: one per core
    if args.only in (None, "drain"):
        drain(args.messages)
    if args.only in (None, "live"):
        live(args.seconds)


if __name__ == "__main__":
    main()
