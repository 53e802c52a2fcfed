"""Web targets on MariaDB:
api - p50/p95 of a filtered page of 100 inferences from a table of --rows rows
      (default 5,000,000; generated server-side with MariaDB's sequence engine)
map - 1,000 devices and 100,000 detections: time until headless Chromium has painted the
      device markers and clusters, then the offline basemap (the page's own marks)
prune - with --span-days: retention of the oldest whole month (a partition drop), timed,
      and the table's disk use per row and per device-day

Data at scale (issue 17): 20 M rows over 120 days, monthly partitions, all three parts:
    .venv/bin/python bench/bench_web.py --rows 20000000 --span-days 120 --only scale
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import pymysql
from sqlalchemy import func, select

from bench._common import machine, percentile
from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db import partitions
from earwitness.cloud.db.engine import make_engine, transaction
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.models import Inference
from earwitness.cloud.db.repo import retention
from earwitness.cloud.prune import prune
from earwitness.cloud.settings import CloudSettings, WebSettings
from earwitness.cloud.web.app import create_app
from tests.browser import CHROMIUM_ARGS, chromium_path, serve

GROUPS = ["alarm", "distress", "animal", "speech"]
LABELS = ["Siren", "Screaming", "Dog", "Speech"]


def fill(db: str, rows: int, devices: int, span_days: float = 0) -> None:
    """Server-side INSERT ... SELECT from seq_1_to_N: millions of rows in a minute. Rows
    are 15 ms apart going back from now, or spread evenly over ``span_days``."""
    step_us = int(span_days * 86_400e6 / rows) if span_days else 15_000
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
                    seq, UTC_TIMESTAMP(3) - INTERVAL (({start} + seq) * {step_us}) MICROSECOND,
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


def map_load(chromium: Any, base: str, devices: int) -> dict[str, float]:
    """One page load in a fresh context (empty cache and storage, as a first visit) of a
    running browser: seconds from the request to the page's own marks (set after the
    browser painted the devices, then the basemap), checked against the DOM."""
    ctx = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = ctx.new_page()
        t0 = time.time()
        page.goto(base + "/", timeout=120_000, wait_until="commit")
        response = time.time() - t0
        page.wait_for_selector("[data-basemap=ready]", state="attached", timeout=120_000)
        deadline = time.monotonic() + 30
        marks: dict[str, float] = {}
        while len(marks) < 3:  # devices, basemap, basemap detail (this view is zoomed in)
            assert time.monotonic() < deadline, f"marks missing: {marks}"
            marks = page.evaluate(
                """() => Object.fromEntries(performance.getEntriesByType('mark')
                    .filter(m => m.name.startsWith('ew-'))
                    .map(m => [m.name, (performance.timeOrigin + m.startTime) / 1000]))"""
            )
            time.sleep(0.05)
        # Drawn means every device: as its own marker or inside a cluster's count.
        singles = page.locator(".ew-device").count()
        titles = page.locator(".ew-cluster").evaluate_all("els => els.map(e => e.title)")
        clustered = sum(int(t.split(" ", 1)[0]) for t in titles if t)
        assert singles + clustered >= devices, f"{singles + clustered} of {devices} drawn"
        assert page.locator("path.ew-land").count() > 0, "no basemap paths"
        data = page.evaluate(
            """() => performance.getEntriesByType('resource')
                .filter(e => e.name.includes('/map/data'))
                .map(e => (performance.timeOrigin + e.responseEnd) / 1000)"""
        )
        assert len(data) == 1, f"/map/data fetched {len(data)} times (the preload unused?)"
        return {
            "response": response,
            "data": data[0] - t0,
            "devices": marks["ew-devices-drawn"] - t0,
            "basemap": marks["ew-basemap-drawn"] - t0,
            "detail": marks["ew-basemap-detail"] - t0,
            "count": float(page.locator("#ew-count").inner_text()),
        }
    finally:
        ctx.close()
        # The page's deferred requests (feed, timeline) may still be running on the server:
        # let them finish so that each load meets an idle server, as independent visits do.
        time.sleep(2)


def prune_month(engine: Any, db: str) -> None:
    """Disk per row and per device-day, then retention of the oldest whole month: the
    partition drop, and for contrast the batched row deletes it replaces."""
    conn = pymysql.connect(host="127.0.0.1", user="root", database=db, autocommit=True)
    with conn.cursor() as cur:
        cur.execute("ANALYZE TABLE inferences")
        cur.execute(
            "SELECT DATA_LENGTH, INDEX_LENGTH FROM information_schema.TABLES"
            " WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'inferences'"
        )
        data, index = cur.fetchone()
        cur.execute("SELECT COUNT(*) FROM inferences")
        total = int(cur.fetchone()[0])
    per_row = (data + index) / total
    per_day = per_row * 86_400 / 0.48  # every 0.48 s window published (publish: every)
    print(
        f"disk: {(data + index) / 2**30:.2f} GiB for {total:,} rows (data {data / 2**30:.2f},"
        f" indexes {index / 2**30:.2f}): {per_row:.0f} bytes per row, {per_day / 2**20:.0f} MiB"
        " per device-day publishing every window"
    )
    with engine.connect() as c:
        parts = [p for p in partitions.list_partitions(c) if p.below is not None]
    oldest = parts[0]
    assert oldest.below is not None
    cutoff = datetime(oldest.below.year, oldest.below.month, 1, tzinfo=UTC)
    t = time.perf_counter()
    counts = prune(engine, datetime.now(UTC) - cutoff)
    took = time.perf_counter() - t
    print(
        f"prune: month {oldest.name} dropped with its {counts['inferences']:,} rows in"
        f" {took:.2f} s (partition drop; target <= 5 s)"
    )
    # The same by rows: the batched deletes of db prune before partitions (5,000 per batch).
    with engine.connect() as c:
        oldest_left = c.execute(select(func.min(Inference.window_start))).scalar_one()
    t, deleted = time.perf_counter(), 0
    while deleted < 200_000:
        with transaction(engine) as session:
            n = retention.delete_batch(
                session, Inference, "window_start", oldest_left + timedelta(days=40), 5000
            )
        deleted += n
        if not n:
            break
    rate = deleted / (time.perf_counter() - t)
    print(
        f"for contrast, row deletes: {deleted:,} rows at {rate:,.0f} rows/s, so a month of"
        f" {counts['inferences']:,} rows would take ~{counts['inferences'] / rate:.0f} s"
    )
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--only", choices=["api", "map", "prune", "scale"])
    parser.add_argument(
        "--span-days", type=float, default=0, help="spread the rows over this many days back"
    )
    parser.add_argument("--loads", type=int, default=10, help="map loads measured after the first")
    parser.add_argument(
        "--map-limit",
        type=int,
        default=100_000,
        help="web.map_detections_limit (the product's default is"
        f" {WebSettings.model_fields['map_detections_limit'].default:,})",
    )
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
        if args.span_days:  # monthly partitions back to the oldest row (db partitions --since)
            since = datetime.now(UTC) - timedelta(days=args.span_days)
            made = partitions.extend_back(engine, since.date())
            print(f"partitions created back to {since:%Y-%m}: {len(made)}", flush=True)
        rows = args.rows if args.only != "map" else 100_000
        with admin.cursor() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {db}.inferences")
            present = cur.fetchone()[0]
        if present:
            rows = present
            print(f"using {rows:,} rows already in {db}", flush=True)
        else:
            print(f"filling {rows:,} inference rows for {args.devices} devices ...", flush=True)
            fill(db, rows, args.devices, args.span_days)
        clips = Path(tempfile.mkdtemp())
        settings = CloudSettings(
            database_url=url,
            clips={"url": str(clips)},
            web={"auth": False, "detection_min_score": 0.0, "map_detections_limit": args.map_limit},
        )
        app = create_app(settings, engine, FileClipStore(clips))
        with serve(app) as base:
            if args.only in (None, "api", "scale"):
                api(base, args.devices, 20)  # warm-up
                t = api(base, args.devices)
                print(
                    f"api: filtered page of 100 from {rows:,} rows, {len(t)} requests:"
                    f" p50 {statistics.median(t) * 1000:.1f} ms,"
                    f" p95 {percentile(t, 95) * 1000:.1f} ms (uvicorn, 1 worker)"
                )
            if args.only in (None, "map", "scale"):
                from playwright.sync_api import sync_playwright

                with sync_playwright() as p:
                    chromium = p.chromium.launch(
                        executable_path=chromium_path(), args=CHROMIUM_ARGS
                    )
                    loads = [map_load(chromium, base, args.devices) for _ in range(1 + args.loads)]
                    chromium.close()
                count = int(loads[0].pop("count"))
                first, rest = loads[0], loads[1:]
                print(
                    f"map: {args.devices} devices and {count:,} detections"
                    f" (map_detections_limit {args.map_limit:,}) in headless Chromium,"
                    f" a new context (empty cache) per load; the first load after the server"
                    f" started, then the median and worst of {args.loads} more:"
                )
                for key, what in (
                    ("response", "the page's response began"),
                    ("data", "its data (/map/data, preloaded) arrived"),
                    ("devices", "devices drawn (every marker or cluster painted)"),
                    ("basemap", "fully drawn (devices and the offline 1:110m basemap painted)"),
                    ("detail", "the basemap's 1:50m detail painted over it"),
                ):
                    times = sorted(load[key] for load in rest)
                    print(
                        f"  {what}: first {first[key]:.2f} s,"
                        f" median {statistics.median(times):.2f} s, worst {times[-1]:.2f} s"
                    )
        if args.only in ("prune", "scale"):
            prune_month(engine, db)
        engine.dispose()
    finally:
        if not args.keep:
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()


if __name__ == "__main__":
    main()
