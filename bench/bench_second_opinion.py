"""Second opinion on one core: yamnet-reference clips/s on five-second ESC-50 clips
(target >= 40/s) and queue overhead per clip on MariaDB, claim + results (target <= 5 ms).

``--vggish DIR`` also times the vggish backend from that model directory; ``--vggish
generated`` builds one from generated weights (speed does not depend on their values)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pymysql

from bench._common import ESC50, MODELS, machine
from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine, transaction
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.repo import clips as clip_queue
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.secondopinion.backends import YamnetReference
from earwitness.cloud.secondopinion.worker import Worker
from earwitness.shared import audio
from earwitness.shared.topics import Kind
from tests.factories import Device, wire

CLIPS = 200


def generated_vggish_dir() -> Path:
    """Real architecture, generated weights, identity PCA, a two-class head."""
    import numpy as np
    import onnx

    from earwitness.cloud.secondopinion.vggish import graph
    from earwitness.cloud.secondopinion.vggish.convert import convert
    from tests.test_vggish import generated_weights

    work = Path(tempfile.mkdtemp())
    np.savez(work / "weights.npz", **generated_weights())
    np.savez(work / "pca.npz", pca_eigen_vectors=np.eye(128), pca_means=np.zeros(128))
    convert(work / "weights.npz", work / "pca.npz", work / "models")
    head = graph.head_model(np.zeros((128, 2), np.float32), np.zeros(2, np.float32),
                            ["Dog", "Siren"], {})  # fmt: skip
    onnx.save_model(head, work / "models" / "vggish_head.onnx")
    (work / "models" / "yamnet_class_map.csv").symlink_to(
        (MODELS / "yamnet_class_map.csv").resolve()
    )
    return work / "models"


def time_backend(backend, waves) -> None:  # type: ignore[no-untyped-def]
    backend.score(waves[0])
    t0 = time.perf_counter()
    for w in waves:
        backend.score(w)
    elapsed = time.perf_counter() - t0
    print(
        f"{backend.name}: {len(waves)} clips ({sum(w.size for w in waves) / 16000 / len(waves):.1f}"
        f" s each) in {elapsed:.2f} s = {len(waves) / elapsed:.1f} clips/s (1 thread,"
        " decode excluded)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vggish", default=None, help="model dir, or 'generated'")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    files = sorted(ESC50.glob("*.flac"))[:CLIPS]
    waves = [audio.load(f) for f in files]
    if args.vggish:
        from earwitness.cloud.secondopinion.vggish.backend import VGGish

        vdir = generated_vggish_dir() if args.vggish == "generated" else Path(args.vggish)
        time_backend(VGGish(vdir, threads=1), waves[:50])
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
        BatchStore(engine).store(prepare(batch, FileClipStore(store_dir), Limits(2**19, 4096)))

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
            with transaction(engine) as session:  # as the worker claims
                clips = clip_queue.claim(session, "bench", 60, 8)
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
