"""Ingest throughput and latency. Mosquitto, MariaDB, publishers and consumers all share
this machine's 2 cores.

Prints, in one run:
  ceilings    - a Mosquitto -> mosquitto_sub drain rate (C clients) and the raw
                PyMySQL executemany insert rate into the real inferences table
  backlog     - N messages queued in the broker for the consumer's persistent session,
                then drained into MariaDB by 1 consumer and by 2 (shared subscription):
                the consumer's own capacity, counted from its first commit (its
                start-up excluded); zero loss and no duplicates checked
  live        - the same N published by C publishers (mosquitto_pub -l) while consuming
  latency     - publish-to-committed p50/p95 at 1,000 messages/s (measured via the ack
                watermark, so it includes the ack's trip back)

Usage: python bench/bench_ingest.py [--messages 100000] [--driver pymysql|mysqldb]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
import pymysql
from paho.mqtt.enums import CallbackAPIVersion

from bench._common import machine, percentile
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.ingest.rows import inference_row
from earwitness.shared.topics import Kind
from tests.factories import Device, wire
from tests.services import PrivateBroker

DEVICES = 10


DB_PORT = 3306  # or the Galera cluster's HAProxy (--galera)


def connect(db: str | None, autocommit: bool = False) -> pymysql.Connection:  # type: ignore[type-arg]
    return pymysql.connect(
        host="127.0.0.1", port=DB_PORT, user="root", database=db, autocommit=autocommit
    )


def payload_files(site: str, n: int, tmp: Path) -> list[tuple[str, Path]]:
    """One file per device topic, one JSON message per line (for mosquitto_pub -l)."""
    out = []
    now = datetime.now(UTC)
    for d in range(DEVICES):
        dev = Device(site, f"d{d}", t0=now)
        path = tmp / f"{site}-d{d}.jsonl"
        with path.open("wb") as fh:
            for seq in range(n // DEVICES):
                fh.write(wire(dev.inference(seq)) + b"\n")
        out.append((dev.topic(Kind.INFERENCE), path))
    return out


def publish_files(port: int, files: list[tuple[str, Path]]) -> float:
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "mosquitto_pub",
                "-p",
                str(port),
                "-q",
                "1",
                "-t",
                topic,
                "-l",
                "-i",
                f"pub-{uuid.uuid4().hex[:6]}",
            ],
            stdin=path.open("rb"),
        )
        for topic, path in files
    ]
    for p in procs:
        p.wait(600)
    return time.perf_counter() - t0


def ceiling_broker(port: int, n: int, tmp: Path) -> float:
    site = f"c{uuid.uuid4().hex[:6]}"
    files = payload_files(site, n, tmp)
    sub = subprocess.Popen(
        [
            "mosquitto_sub",
            "-p",
            str(port),
            "-q",
            "1",
            "-C",
            str(n),
            "-t",
            f"earwitness/v1/{site}/+/inference",
        ],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    t0 = time.perf_counter()
    publish_files(port, files)
    sub.wait(600)
    return n / (time.perf_counter() - t0)


def ceiling_insert(db: str, n: int) -> float:
    conn = connect(db)
    dev = Device("raw", "raw")
    rows = [inference_row(dev.inference(i), datetime.now(UTC)) for i in range(n)]
    cols = list(rows[0])
    sql = f"INSERT INTO inferences ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
    values = [
        tuple(
            json.dumps(v)
            if isinstance(v, dict | list)
            else v.replace(tzinfo=None)
            if isinstance(v, datetime)
            else v
            for v in (r[c] for c in cols)
        )
        for r in rows
    ]
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for i in range(0, n, 2000):
            cur.executemany(sql, values[i : i + 2000])
            conn.commit()
    elapsed = time.perf_counter() - t0
    with conn.cursor() as cur:
        cur.execute("DELETE FROM inferences")
    conn.commit()
    conn.close()
    return n / elapsed


WRITERS: int | None = None  # ingest.writer_processes of the consumers started (None: default)


def start_ingest(
    db_url: str, port: int, site: str, group: str, cid: str, clips: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EARWITNESS_DATABASE_URL": db_url,
        "EARWITNESS_MQTT__PORT": str(port),
        "EARWITNESS_INGEST__GROUP": group,
        "EARWITNESS_INGEST__CLIENT_ID": cid,
        "EARWITNESS_INGEST__SITES": json.dumps([site]),
        "EARWITNESS_INGEST__HEALTH_PORT": "0",
        "EARWITNESS_INGEST__SESSION_EXPIRY_S": "3600",
        "EARWITNESS_CLIPS__URL": clips,
    }
    if WRITERS is not None:
        env["EARWITNESS_INGEST__WRITER_PROCESSES"] = str(WRITERS)
    return subprocess.Popen(
        [sys.executable, "-m", "earwitness", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def count_rows(db: str) -> int:
    with connect(db) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT message_id) FROM inferences")
        total, distinct = cur.fetchone()
    assert total == distinct, f"duplicate rows: {total} vs {distinct}"
    return int(total)


def reset(db: str) -> None:
    with connect(db) as conn, conn.cursor() as cur:
        for table in ("inferences", "pending_seqs", "ack_watermarks", "devices"):
            cur.execute(f"DELETE FROM {table}")
        conn.commit()


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


BUSY: list[float] = []  # machine CPU use during each wait_rows, from the first commit on


def wait_rows(db: str, n: int, timeout: float = 900) -> tuple[float, float]:
    """Until every message is committed; then the rows are counted once, duplicates too.
    Returns the time it took and the rate from the first commit on (a consumer's own
    start-up, imports and connections, excluded).

    Progress is read from the ack watermarks (seqs start at 0 without gaps here) on one
    connection: a few rows, where COUNT(*) over a growing table, or a new connection per
    poll, would load the machine the benchmark is measuring."""
    t0 = time.perf_counter()
    conn = connect(db, autocommit=True)
    done, first = 0, None
    cpu0 = cpu_times()
    with conn, conn.cursor() as cur:
        while done < n:
            time.sleep(0.02)
            cur.execute("SELECT COALESCE(SUM(seq + 1), 0) FROM ack_watermarks")
            done = int(cur.fetchone()[0])
            if first is None and done:
                first = (time.perf_counter(), done)
                cpu0 = cpu_times()
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"timed out at {done} of {n}")
    end = time.perf_counter()
    cpu1 = cpu_times()
    if cpu1[1] > cpu0[1]:
        BUSY.append((cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1]))
    rows = count_rows(db)
    if rows != n:
        raise RuntimeError(f"{rows} rows stored for {n} messages")
    assert first is not None
    steady = (n - first[1]) / (end - first[0]) if end > first[0] and n > first[1] else 0.0
    return end - t0, steady


def run(db: str, db_url: str, port: int, n: int, consumers: int, mode: str, tmp: Path) -> float:
    site, group = f"b{uuid.uuid4().hex[:6]}", f"g{uuid.uuid4().hex[:6]}"
    files = payload_files(site, n, tmp)
    ids = [f"bench-{group}-{i}" for i in range(consumers)]
    procs = [start_ingest(db_url, port, site, group, cid, str(tmp / "clips")) for cid in ids]
    time.sleep(3)  # subscribed: the broker now holds a persistent session per consumer
    if mode == "backlog":
        for p in procs:
            p.terminate()
            p.wait(10)
        publish_files(port, files)  # queued for the offline sessions
        procs = [start_ingest(db_url, port, site, group, cid, str(tmp / "clips")) for cid in ids]
        _elapsed, rate = wait_rows(db, n)  # from the first commit: start-up excluded
    else:
        t0 = time.perf_counter()
        threading.Thread(target=publish_files, args=(port, files), daemon=True).start()
        wait_rows(db, n)
        rate = n / (time.perf_counter() - t0)
    for p in procs:
        p.terminate()
        p.wait(10)
    reset(db)
    return rate


def latency(db: str, db_url: str, port: int, n: int, rate: float, tmp: Path) -> list[float]:
    site, group = f"l{uuid.uuid4().hex[:6]}", f"g{uuid.uuid4().hex[:6]}"
    proc = start_ingest(db_url, port, site, group, f"bench-{group}", str(tmp / "clips"))
    time.sleep(3)
    acks: list[tuple[str, int, float]] = []
    watcher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"w-{group}", protocol=paho.MQTTv5)
    watcher.on_message = lambda c, u, m: acks.append(
        (m.topic.split("/")[3], int(json.loads(m.payload)["seq"]), time.time())
    )
    watcher.connect("127.0.0.1", port)
    watcher.subscribe(f"earwitness/v1/{site}/+/ack", qos=0)
    watcher.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"p-{group}", protocol=paho.MQTTv5)
    pub.max_inflight_messages_set(1000)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    devs = [Device(site, f"d{d}", t0=datetime.now(UTC)) for d in range(DEVICES)]
    payloads = [
        (devs[i % DEVICES].topic(Kind.INFERENCE), wire(devs[i % DEVICES].inference(i // DEVICES)))
        for i in range(n)
    ]
    sent_at = []
    t0 = time.perf_counter()
    for i, (topic, payload) in enumerate(payloads):
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent_at.append(time.time())
        pub.publish(topic, payload, qos=1)
    wait_rows(db, n)
    time.sleep(1.0)
    watcher.loop_stop()
    pub.loop_stop()
    proc.terminate()
    proc.wait(10)
    reset(db)
    per_device: dict[str, list[tuple[int, float]]] = {}
    for dev, seq, t in acks:
        per_device.setdefault(dev, []).append((seq, t))
    lat = []
    for i, sent in enumerate(sent_at):
        for seq, t in per_device.get(f"d{i % DEVICES}", []):
            if seq >= i // DEVICES:
                lat.append(t - sent)
                break
    return lat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--driver", choices=["pymysql", "mysqldb"], default="pymysql")
    parser.add_argument(
        "--galera", action="store_true", help="into a 3-node Galera cluster behind HAProxy"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}; driver {args.driver}")
    global DB_PORT
    cluster = None
    if args.galera:
        from tests.galera import GaleraCluster

        cluster = GaleraCluster()
        cluster.start()
        DB_PORT = cluster.port
        print(f"database: 3-node Galera (MariaDB 10.11, galera-4) behind HAProxy :{DB_PORT}")
    tmp = Path(tempfile.mkdtemp())
    broker = PrivateBroker("max_inflight_messages 0\nmax_queued_bytes 0\n")
    broker.start()
    db = f"ew_bench_{uuid.uuid4().hex[:8]}"
    admin = connect(None, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    try:
        db_url = f"mysql+{args.driver}://root@127.0.0.1:{DB_PORT}/{db}"
        engine = make_engine(db_url)
        upgrade(engine)
        engine.dispose()
        n = args.messages
        sub_rate = ceiling_broker(broker.port, n, tmp)
        raw_rate = ceiling_insert(db, 20_000)
        print(
            f"ceiling: Mosquitto with C clients (mosquitto_pub -l -> mosquitto_sub), QoS 1:"
            f" {sub_rate:,.0f} msg/s"
        )
        print(f"ceiling: raw PyMySQL executemany into inferences: {raw_rate:,.0f} rows/s")
        global WRITERS
        # Default consumers (a receiving process and two writer processes each), then
        # single-process consumers: one default consumer already keeps both cores of a
        # 2-core machine busy, so scale-out on the shared subscription shows best when
        # each consumer is one process.
        for writers, modes in ((None, ("backlog", "live")), (0, ("backlog",))):
            WRITERS = writers
            label = "" if writers is None else ", single-process consumers"
            for mode in modes:
                for consumers in (1, 2):
                    rate = run(db, db_url, broker.port, n, consumers, mode, tmp)
                    print(
                        f"{mode}{label}: {consumers} consumer(s), {n:,} inference messages:"
                        f" {rate:,.0f} msg/s committed, zero loss, no duplicates"
                        f" ({rate / sub_rate:.0%} of the broker ceiling,"
                        f" {rate / raw_rate:.0%} of raw insert; machine CPU {BUSY[-1]:.0%} busy)",
                        flush=True,
                    )
        WRITERS = None
        lat = latency(db, db_url, broker.port, 10_000, 1000.0, tmp)
        print(
            f"latency at 1,000 msg/s (10,000 messages, 1 consumer): publish-to-committed"
            f" p50 {percentile(lat, 50) * 1000:.0f} ms, p95 {percentile(lat, 95) * 1000:.0f} ms,"
            f" max {max(lat) * 1000:.0f} ms ({len(lat)} measured)"
        )
    finally:
        broker.cleanup()
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()
        if cluster is not None:
            cluster.cleanup()


if __name__ == "__main__":
    main()
