"""Web targets on MariaDB:
api - p50/p95 of a filtered page of 100 inferences from a table of --rows rows
      (default 5,000,000; generated server-side with MariaDB's sequence engine)
map - 1,000 devices and 100,000 detections: time until headless Chromium has drawn the
      device markers and the detection clusters
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import pymysql

from bench._common import machine, percentile
from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.settings import CloudSettings
from earwitness.cloud.web.app import create_app
from tests.browser import browser, serve

GROUPS = ["alarm", "distress", "animal", "speech"]
LABELS = ["Siren", "Screaming", "Dog", "Speech"]


def fill(db: str, rows: int, devices: int) -> None:
    """Server-side INSERT ... SELECT from seq_1_to_N: millions of rows in a minute."""
    conn = pymysql.connect(host="127.0.0.1", user="root", database=db, autocommit=True)
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("SET SESSION unique_checks=0")
        chunk = 500_000
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            cur.execute(f"""
                INSERT INTO inferences (message_id, device_id, site, seq, window_start, window_s,
                    label, label_index, label_mid, score, top_group, top_group_score, top_k,
                    group_scores, dbfs, inference_ms, model_id, lat, lon, received_at)
                SELECT CONCAT('m', {start} + seq), CONCAT('dev', (seq % {devices})), 'bench',
                    seq, UTC_TIMESTAMP(3) - INTERVAL (({start} + seq) * 15 DIV 1000) SECOND,
                    0.96, ELT(1 + seq % 4, {", ".join(repr(x) for x in LABELS)}), seq % 4,
                    '/m/x', ((seq DIV {devices}) % 100) / 100,
                    ELT(1 + (seq DIV {devices}) % 4, {", ".join(repr(g) for g in GROUPS)}),
                    ((seq DIV {devices}) % 100) / 100, '[]', '{{}}', -30, 0.6, 'yamnet-int8@bench',
                    40 + (seq % {devices}) * 0.01, 10 + (seq % {devices}) * 0.013, UTC_TIMESTAMP(3)
                FROM seq_1_to_{n}""")
            print(f"  {start + n:,} rows ({time.perf_counter() - t0:.0f} s)", flush=True)
        cur.execute(f"""
            INSERT INTO devices (id, site, name, lat, lon, first_seen, last_seen, online)
            SELECT CONCAT('dev', seq - 1), 'bench', CONCAT('device ', seq), 40 + (seq - 1) * 0.01,
                10 + (seq - 1) * 0.013, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3), 1
            FROM seq_1_to_{devices}""")
        cur.execute("ANALYZE TABLE inferences")
    conn.close()


def api(base: str, devices: int, n: int = 300) -> list[float]:
    times = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(n):
            params = {"device": f"dev{random.randrange(devices)}", "limit": 100}
            if i % 2:
                params["group"] = random.choice(GROUPS)
                params["min_score"] = 0.5
            t = time.perf_counter()
            r = client.get("/api/v1/inferences", params=params)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200 and len(r.json()["items"]) > 0, r.text[:200]
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--only", choices=["api", "map"])
    parser.add_argument(
        "--keep", default=None, help="use (and keep) this database, filling it only if empty"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    db = args.keep or f"ew_bench_web_{uuid.uuid4().hex[:6]}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
    try:
        url = f"mysql+pymysql://root@127.0.0.1:3306/{db}"
        engine = make_engine(url)
        upgrade(engine)
        rows = args.rows if args.only != "map" else 100_000
        with admin.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {db}.inferences")
            present = cur.fetchone()[0]
        if present:
            rows = present
            print(f"using {rows:,} rows already in {db}", flush=True)
        else:
            print(f"filling {rows:,} inference rows for {args.devices} devices ...", flush=True)
            fill(db, rows, args.devices)
        clips = Path(tempfile.mkdtemp())
        settings = CloudSettings(
            database_url=url,
            clips={"url": str(clips)},
            web={"auth": False, "detection_min_score": 0.0, "map_detections_limit": 100_000},
        )
        app = create_app(settings, engine, FileClipStore(clips))
        with serve(app) as base:
            if args.only in (None, "api"):
                api(base, args.devices, 20)  # warm-up
                t = api(base, args.devices)
                print(
                    f"api: filtered page of 100 from {rows:,} rows, {len(t)} requests:"
                    f" p50 {statistics.median(t) * 1000:.1f} ms,"
                    f" p95 {percentile(t, 95) * 1000:.1f} ms (uvicorn, 1 worker)"
                )
            if args.only in (None, "map"):
                with browser() as ctx:
                    page = ctx.new_page()
                    t = time.perf_counter()
                    page.goto(base + "/", timeout=120_000, wait_until="commit")
                    first_byte = time.perf_counter() - t
                    # Drawn = every device is on the map, as its own marker or inside a
                    # cluster ("N devices, M detections"). Locators, not
                    # wait_for_function: the page's CSP refuses eval.
                    deadline = time.monotonic() + 120
                    while True:
                        singles = page.locator(".ew-device").count()
                        titles = page.locator(".ew-cluster").evaluate_all(
                            "els => els.map(e => e.title)"
                        )
                        clustered = sum(int(t.split(" ", 1)[0]) for t in titles if t)
                        if singles + clustered >= args.devices:
                            break
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{singles + clustered} devices drawn")
                        time.sleep(0.02)
                    elapsed = time.perf_counter() - t
                    count = page.locator("#ew-count").inner_text()
                print(
                    f"map: {args.devices} devices and {count} detections rendered in headless"
                    f" Chromium in {elapsed:.2f} s (page generation + load + draw;"
                    f" the server's response began after {first_byte:.2f} s)"
                )
        engine.dispose()
    finally:
        if not args.keep:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()


if __name__ == "__main__":
    main()
