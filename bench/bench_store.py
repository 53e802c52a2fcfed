"""One store process's cost per message at fleet shape: batches whose messages come from
as many devices as the batch is long (one message each), as ingest sees a large fleet,
stored by ``BatchStore`` into a fresh MariaDB database, without MQTT.

Few devices with many messages each (``bench_ingest``) cost little per message; a fleet
costs per device (its watermark, its pending runs, its device row). This isolates that
cost and names where it goes (cProfile, per batch): validation, the inference insert,
the ack watermarks.

    .venv/bin/python bench/bench_store.py --devices 4000 --batch 1000 --batches 30
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymysql

from bench._common import device_message, local_mariadb, machine
from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.ingest.store import BatchStore, store_batch
from earwitness.cloud.ingest.validate import Limits, RawMessage

HEARTBEAT_SHARE = 1 / 16  # a heartbeat per 30 s beside an inference per 2 s
PARTS = {  # what the profile reports, by function name
    "prepare": "validate (prepare)",
    "add_many": "data inserts",
    "settle": "ack watermarks (settle)",
    "record_seen": "device rows",
    "set_last_heartbeats": "latest heartbeats",
}


class Fleet:
    def __init__(self, devices: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.devices = [
            (f"site{i % 20}", f"dev-{i:05d}", uuid.uuid4().hex[:16]) for i in range(devices)
        ]
        self.seqs = [0] * devices
        self.cursor = 0

    def message(self, i: int) -> RawMessage:
        site, device, epoch = self.devices[i]
        seq = self.seqs[i]
        self.seqs[i] += 1
        now = datetime.now(UTC).isoformat()
        kind = "heartbeat" if self.rng.random() < HEARTBEAT_SHARE else "inference"
        payload = device_message(kind, site, device, epoch, seq, now, outbox_min_seq=seq)
        topic = f"earwitness/v1/{site}/{device}/{kind}"
        return RawMessage(topic, payload, datetime.now(UTC))

    def batch(self, size: int) -> list[RawMessage]:
        out = []
        for _ in range(size):
            out.append(self.message(self.cursor))
            self.cursor = (self.cursor + 1) % len(self.devices)
        return out


def mariadb_cpu_s() -> float | None:
    """CPU seconds the local MariaDB server has used (None when it is not local)."""
    server = local_mariadb()
    if server is None:
        return None
    times = server.cpu_times()
    return float(times.user + times.system)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=1000, help="messages per batch")
    parser.add_argument("--batches", type=int, default=30, help="batches measured")
    parser.add_argument("--mysql", default="root@127.0.0.1:3306", help="user@host:port")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-profile", action="store_true", help="time without cProfile (no breakdown)"
    )
    args = parser.parse_args(argv)
    user, _, hostport = args.mysql.partition("@")
    host, _, port = hostport.partition(":")
    db = f"ew_bench_store_{uuid.uuid4().hex[:8]}"
    admin = pymysql.connect(host=host, port=int(port or 3306), user=user, autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    try:
        engine = make_engine(f"mysql+pymysql://{user}@{host}:{port or 3306}/{db}")
        upgrade(engine)
        fleet = Fleet(args.devices, args.seed)
        limits = Limits(clip_max_bytes=2_000_000, dead_letter_payload_bytes=65536)
        with TemporaryDirectory() as tmp:
            clips = FileClipStore(Path(tmp))
            store = BatchStore(engine)
            warm = max(1, args.devices // args.batch) * 2  # every device known, warm caches
            print(f"{machine()}; {args.devices} devices, batches of {args.batch}; warming up")
            for _ in range(warm):
                store_batch(store, fleet.batch(args.batch), clips, limits)
            batches = [fleet.batch(args.batch) for _ in range(args.batches)]
            profile = cProfile.Profile()
            server_cpu = mariadb_cpu_s()
            own_cpu = time.process_time()
            start = time.perf_counter()
            if not args.no_profile:
                profile.enable()
            for b in batches:
                store_batch(store, b, clips, limits)
            profile.disable()
            elapsed = time.perf_counter() - start
            own_cpu = time.process_time() - own_cpu
            server_cpu = mariadb_cpu_s() - server_cpu if server_cpu is not None else None
        engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE {db}")
        admin.close()
    n = args.batches * args.batch
    print(
        f"stored {n} messages in {elapsed:.2f} s: {elapsed / args.batches * 1000:.1f} ms per"
        f" batch, {elapsed / n * 1e6:.0f} µs per message, {n / elapsed:,.0f} msg/s"
        " (one store process"
        + (")" if args.no_profile else "; cProfile on, its overhead included)")
    )
    # CPU time moves far less between runs on a shared machine than wall time does.
    server = f", MariaDB {server_cpu / n * 1e6:.0f} µs" if server_cpu is not None else ""
    print(f"CPU per message: this process {own_cpu / n * 1e6:.0f} µs{server}")
    if args.no_profile:
        return 0
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    for name, label in PARTS.items():
        total = sum(ct for (_f, _l, fn), (_cc, _nc, _tt, ct, _c) in stats.items() if fn == name)
        print(f"  {label:26s} {total / args.batches * 1000:7.1f} ms per batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
