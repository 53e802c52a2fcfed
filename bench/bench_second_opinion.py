"""Second opinion on one core: yamnet-reference clips/s on five-second ESC-50 clips
(target >= 40/s) and queue overhead per clip on MariaDB, claim + results (target <= 5 ms)."""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymysql

from bench._common import ESC50, MODELS, machine
from cloud.clipstore import FileClipStore
from cloud.db.engine import make_engine
from cloud.db.migrate import upgrade
from cloud.ingest.writer import BatchWriter, Limits, RawMessage, prepare
from cloud.secondopinion import queue
from cloud.secondopinion.backends import YamnetReference
from cloud.secondopinion.worker import Worker
from shared import audio
from shared.topics import Kind
from tests.factories import Device, wire

CLIPS = 200


def main() -> None:
    print(f"machine: {machine()}")
    files = sorted(ESC50.glob("*.flac"))[:CLIPS]
    waves = [audio.load(f) for f in files]
    backend = YamnetReference(MODELS, threads=1)
    backend.score(waves[0])
    t0 = time.perf_counter()
    for w in waves:
        backend.score(w)
    model_s = time.perf_counter() - t0
    seconds = sum(w.size for w in waves) / 16000
    print(
        f"yamnet-reference: {len(waves)} clips ({seconds / len(waves):.1f} s each) in"
        f" {model_s:.2f} s = {len(waves) / model_s:.1f} clips/s (1 thread, decode excluded)"
    )

    db = f"ew_bench_so_{uuid.uuid4().hex[:6]}"
    admin = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {db}")
    try:
        engine = make_engine(f"mysql+pymysql://root@127.0.0.1:3306/{db}")
        upgrade(engine)
        store_dir = Path(tempfile.mkdtemp())
        dev = Device("bench", "d1")
        flac = [audio.encode_flac(w) for w in waves]
        batch = [
            RawMessage(dev.topic(Kind.CLIP), wire(dev.clip(i, flac=f)), datetime.now(UTC))
            for i, f in enumerate(flac)
        ]
        BatchWriter(engine).write(prepare(batch, FileClipStore(store_dir), Limits(2**19, 4096)))

        class Instant:
            """Stands in for the model, so only the queue's cost is timed."""

            name = "instant"

            def score(self, wave):  # type: ignore[no-untyped-def]
                return backend_opinion

        backend_opinion = backend.score(waves[0])
        worker = Worker(engine, FileClipStore(store_dir), [Instant()], name="bench")  # type: ignore[list-item]
        claim_s = store_s = 0.0
        worker_store = worker._store
        done = 0
        while True:
            t = time.perf_counter()
            clips = queue.claim(engine, "bench", 60, 8)  # as the worker claims
            claim_s += time.perf_counter() - t
            if not clips:
                break
            for clip in clips:
                t = time.perf_counter()
                worker_store(clip, [backend_opinion])
                store_s += time.perf_counter() - t
                done += 1
        print(
            f"queue on MariaDB: {done} clips, claim {1000 * claim_s / done:.2f} ms +"
            f" results {1000 * store_s / done:.2f} ms = {1000 * (claim_s + store_s) / done:.2f}"
            " ms per clip"
        )
        engine.dispose()
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db}")
        admin.close()


if __name__ == "__main__":
    main()
