"""Bounded work per request: 8 parallel map loads over 200,000 rows in range.

Fills a fresh MariaDB database (server-side, as bench_web does), runs `earwitness web` as
its own process (production-like: tokens on), then fires rounds of 8 concurrent requests
for the map page, the hourly stats and the CSV export. Prints the web process's peak RSS
(VmHWM) and the latency percentiles. Targets (issue 13): peak RSS <= 300 MB, map p95 <= 1 s.

    .venv/bin/python bench/bench_map_load.py [--rows 200000] [--devices 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pymysql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import machine, percentile
from bench.bench_web import fill
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.web.auth import create_token
from tests.services import free_port, port_open

PARALLEL = 8


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    db = f"ew_bench_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    url = f"mysql+pymysql://root@127.0.0.1:3306/{db}"
    proc: subprocess.Popen[bytes] | None = None
    try:
        engine = make_engine(url)
        upgrade(engine)
        fill(db, args.rows, args.devices)
        token = create_token(engine, "bench", "read")
        engine.dispose()
        port = free_port()
        env = {
            **os.environ,
            "EARWITNESS_DATABASE_URL": url,
            "EARWITNESS_CLIPS__URL": tempfile.mkdtemp(),
            "EARWITNESS_WEB__PORT": str(port),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "earwitness", "web"], env=env, stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while not port_open("127.0.0.1", port, 0.2):
            assert time.monotonic() < deadline and proc.poll() is None, "web did not start"
            time.sleep(0.1)
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        print(f"web started: {peak_rss_mb(proc.pid):.0f} MB RSS before the first request")
        paths = {"map": "/", "hourly": "/api/v1/stats/hourly", "csv": "/api/v1/inferences.csv"}
        for name, path in paths.items():
            times: list[float] = []
            sizes: list[int] = []

            def load(_: int, path: str = path) -> tuple[float, int]:
                with httpx.Client(base_url=base, timeout=120, headers=headers) as client:
                    t = time.perf_counter()
                    r = client.get(path)
                    assert r.status_code == 200, (path, r.status_code, r.text[:200])
                    return time.perf_counter() - t, len(r.content)

            with ThreadPoolExecutor(PARALLEL) as pool:
                for _round in range(args.rounds):
                    for elapsed, size in pool.map(load, range(PARALLEL)):
                        times.append(elapsed)
                        sizes.append(size)
            print(
                f"{name}: {PARALLEL} parallel x {args.rounds} rounds over {args.rows:,} rows:"
                f" p50 {percentile(times, 50):.2f} s, p95 {percentile(times, 95):.2f} s,"
                f" {max(sizes) / 1e6:.2f} MB per response;"
                f" web peak RSS so far {peak_rss_mb(proc.pid):.0f} MB",
                flush=True,
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()


if __name__ == "__main__":
    main()
