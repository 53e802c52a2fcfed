"""Ingest throughput and latency on this machine: Mosquitto, MariaDB and the consumer
all share the 2 cores.

Prints, in one run:
  ceilings  - `mosquitto_sub` drain rate and raw PyMySQL executemany insert rate
  1 consumer  - sustained inference messages/s into MariaDB, zero loss checked
  2 consumers - the same with two processes on the shared subscription
  latency   - publish-to-committed p50/p95 at 1,000 messages/s (via the ack watermark)

Usage: python bench/bench_ingest.py [--messages 100000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
import pymysql
from paho.mqtt.enums import CallbackAPIVersion

from bench._common import machine, percentile
from cloud.db.engine import make_engine
from cloud.db.migrate import upgrade
from shared.topics import Kind
from tests.factories import Device, wire

HOST, PORT = "127.0.0.1", 1883


def new_client(cid: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=paho.MQTTv5)
    c.max_inflight_messages_set(2000)
    c.max_queued_messages_set(0)
    c.connect(HOST, PORT)
    return c


def make_payloads(site: str, n: int, devices: int = 10) -> list[tuple[str, bytes]]:
    devs = [Device(site, f"d{i}") for i in range(devices)]
    return [
        (devs[i % devices].topic(Kind.INFERENCE), wire(devs[i % devices].inference(i // devices)))
        for i in range(n)
    ]


def publisher(site: str, n: int, rate: float, start_evt: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    payloads = make_payloads(site, n)
    client = new_client(f"bench-pub-{uuid.uuid4().hex[:6]}")
    client.loop_start()
    start_evt.wait()
    t0 = time.perf_counter()
    sent_at = []
    infos = []
    for i, (topic, payload) in enumerate(payloads):
        if rate:
            target = t0 + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sent_at.append(time.time())
        infos.append(client.publish(topic, payload, qos=1))
    for info in infos:
        info.wait_for_publish(120)
    out.put((time.perf_counter() - t0, sent_at))
    client.loop_stop()
    client.disconnect()


def ceiling_mosquitto_sub(n: int) -> float:
    topic = f"bench/{uuid.uuid4().hex[:8]}"
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", HOST, "-p", str(PORT), "-t", topic, "-q", "1", "-C", str(n)],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    payload = make_payloads("x", 1)[0][1]
    client = new_client(f"bench-ceil-{uuid.uuid4().hex[:6]}")
    client.loop_start()
    t0 = time.perf_counter()
    infos = [client.publish(topic, payload, qos=1) for _ in range(n)]
    for info in infos:
        info.wait_for_publish(120)
    sub.wait(120)
    elapsed = time.perf_counter() - t0
    client.loop_stop()
    return n / elapsed


def ceiling_executemany(db: str, n: int) -> float:
    conn = pymysql.connect(host="127.0.0.1", user="root", database=db)
    from datetime import UTC, datetime

    from cloud.ingest.rows import inference_row

    dev = Device("x", "raw")
    rows = [inference_row(dev.inference(i), datetime.now(UTC)) for i in range(n)]
    cols = list(rows[0])
    sql = f"INSERT INTO inferences ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
    values = [
        tuple(
            json.dumps(r[c])
            if isinstance(r[c], (dict, list))
            else (
                r[c].replace(tzinfo=None) if hasattr(r[c], "tzinfo") and r[c] is not None else r[c]
            )
            for c in cols
        )
        for r in rows
    ]
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        for i in range(0, n, 500):
            cur.executemany(sql, values[i : i + 500])
            conn.commit()
    elapsed = time.perf_counter() - t0
    with conn.cursor() as cur:
        cur.execute("DELETE FROM inferences")
    conn.commit()
    conn.close()
    return n / elapsed


def start_ingest(
    db_url: str, site: str, group: str, cid: str, clips: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EARWITNESS_DATABASE_URL": db_url,
        "EARWITNESS_INGEST__GROUP": group,
        "EARWITNESS_INGEST__CLIENT_ID": cid,
        "EARWITNESS_INGEST__SITES": json.dumps([site]),
        "EARWITNESS_INGEST__HEALTH_PORT": "0",
        "EARWITNESS_INGEST__SESSION_EXPIRY_S": "60",
        "EARWITNESS_CLIPS__URL": clips,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "ingest"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def count_rows(db: str) -> int:
    conn = pymysql.connect(host="127.0.0.1", user="root", database=db)
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT message_id) FROM inferences")
        total, distinct = cur.fetchone()
    conn.close()
    assert total == distinct, f"duplicate rows: {total} vs {distinct}"
    return int(total)


def run_consumers(db: str, n: int, consumers: int, rate: float = 0.0) -> tuple[float, list[float]]:
    db_url = f"mysql+pymysql://root@127.0.0.1:3306/{db}"
    site, group = f"b{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}"
    clips = tempfile.mkdtemp()
    procs = [
        start_ingest(db_url, site, group, f"bench-ingest-{group}-{i}", clips)
        for i in range(consumers)
    ]
    # Let consumers subscribe, then have devices publish.
    time.sleep(2.5)
    ack_times: list[tuple[str, int, float]] = []
    lock = threading.Lock()

    def on_ack(c: object, u: object, msg: paho.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        with lock:
            ack_times.append((msg.topic.split("/")[3], int(data["seq"]), time.time()))

    watcher = new_client(f"bench-ack-{uuid.uuid4().hex[:6]}")
    watcher.on_message = on_ack
    watcher.subscribe(f"earwitness/v1/{site}/+/ack", qos=0)
    watcher.loop_start()
    start, out = mp.Event(), mp.Queue()
    pub = mp.Process(target=publisher, args=(site, n, rate, start, out))
    pub.start()
    time.sleep(3.0)  # payload generation
    t0 = time.perf_counter()
    start.set()
    while count_rows(db) < n:
        time.sleep(0.05)
        if time.perf_counter() - t0 > 600:
            raise RuntimeError("timed out")
    elapsed = time.perf_counter() - t0
    _publish_s, sent_at = out.get()
    pub.join()
    time.sleep(0.5)
    watcher.loop_stop()
    for p in procs:
        p.terminate()
        p.wait(10)
    # Latency: message i of device d is committed by the first ack with seq >= i // 10.
    latencies = []
    per_device: dict[str, list[tuple[int, float]]] = {}
    for dev, seq, t in ack_times:
        per_device.setdefault(dev, []).append((seq, t))
    for i, sent in enumerate(sent_at):
        dev, seq = f"d{i % 10}", i // 10
        for s, t in per_device.get(dev, []):
            if s >= seq:
                latencies.append(t - sent)
                break
    with pymysql.connect(host="127.0.0.1", user="root", database=db) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM inferences")
        cur.execute("DELETE FROM pending_seqs")
        cur.execute("DELETE FROM ack_watermarks")
        conn.commit()
    return elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=60_000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    db = f"ew_bench_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    try:
        engine = make_engine(f"mysql+pymysql://root@127.0.0.1:3306/{db}")
        upgrade(engine)
        engine.dispose()
        sub_rate = ceiling_mosquitto_sub(20_000)
        raw_rate = ceiling_executemany(db, 20_000)
        print(f"ceiling: mosquitto_sub drain {sub_rate:,.0f} msg/s (QoS 1, 20,000 messages)")
        print(f"ceiling: raw PyMySQL executemany {raw_rate:,.0f} rows/s (500-row transactions)")
        n = args.messages
        for consumers in (1, 2):
            elapsed, _ = run_consumers(db, n, consumers)
            rate = n / elapsed
            print(
                f"{consumers} consumer(s): {n:,} inference messages committed in {elapsed:.2f} s"
                f" = {rate:,.0f} msg/s, zero loss, no duplicates"
                f" ({rate / sub_rate:.0%} of mosquitto_sub, {rate / raw_rate:.0%} of raw insert)"
            )
        elapsed, lat = run_consumers(db, 10_000, 1, rate=1000)
        print(
            f"latency at 1,000 msg/s (10,000 messages, 1 consumer): publish-to-committed"
            f" p50 {percentile(lat, 50) * 1000:.0f} ms, p95 {percentile(lat, 95) * 1000:.0f} ms,"
            f" max {max(lat) * 1000:.0f} ms ({len(lat)} measured)"
        )
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()


if __name__ == "__main__":
    main()
