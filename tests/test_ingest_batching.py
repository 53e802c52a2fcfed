"""What ingest's store loop does between batches: how it cuts them
(`IngestService._collect`: at most batch_ms after the first message *arrived*, so a
message that already waited for a busy store process is not held back a second time) and
how it spreads its ack resync (`_resync_acks`) over its passes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.ingest.consumer import IngestService, _Token
from earwitness.cloud.ingest.validate import RawMessage
from tests.ingest_helpers import ingest_settings

BATCH_MS = 2000  # long, so that the timing margins below are wide on a loaded machine


def _service(tmp_path: Path) -> IngestService:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    settings = ingest_settings(url, "s", batch_ms=BATCH_MS, writer_processes=0)
    return IngestService(settings, make_engine(url), FileClipStore(tmp_path / "clips"))


def _raw(arrived: float, mid: int = 1) -> RawMessage:
    return RawMessage("earwitness/v1/s/d/inference", b"{}", datetime.now(UTC),
                      _Token(mid, 1, 1, arrived))  # fmt: skip


def test_a_message_that_already_waited_goes_with_what_is_there(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    old = time.monotonic() - BATCH_MS / 1000  # waited a whole batch_ms for a store process
    svc._inbox.extend([_raw(old, 1), _raw(old + 0.5, 2), _raw(time.monotonic(), 3)])
    t0 = time.monotonic()
    batch = svc._collect()
    assert [r.token.mid for r in batch] == [1, 2, 3]
    assert time.monotonic() - t0 < BATCH_MS / 1000 / 2


def test_a_fresh_message_waits_batch_ms_for_company(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc._inbox.append(_raw(time.monotonic()))
    t0 = time.monotonic()
    batch = svc._collect()
    assert len(batch) == 1
    assert time.monotonic() - t0 >= BATCH_MS / 1000 * 0.9


def test_part_of_the_wait_is_left_for_a_message_that_waited_part_of_it(tmp_path: Path) -> None:
    svc = _service(tmp_path)
    svc._inbox.append(_raw(time.monotonic() - BATCH_MS / 1000 / 2))
    t0 = time.monotonic()
    svc._collect()
    waited = time.monotonic() - t0
    assert BATCH_MS / 1000 * 0.4 <= waited < BATCH_MS / 1000 * 0.9


def test_the_ack_resync_checks_a_chunk_of_streams_per_pass(tmp_path: Path) -> None:
    """A resync of many streams is spread over passes of the store loop (one query for
    a fleet's streams held the loop), and every stream is checked in the end."""
    from sqlalchemy import insert

    from earwitness.cloud.db.migrate import upgrade
    from earwitness.cloud.db.models import AckWatermark
    from earwitness.cloud.ingest.consumer import ACK_REPUBLISH_CHUNK

    svc = _service(tmp_path)
    upgrade(svc.engine)
    n = 2 * ACK_REPUBLISH_CHUNK + 200
    keys = [("s", f"d{i}", "epoch0001") for i in range(n)]
    with svc.engine.begin() as conn:  # another consumer moved every mark to 5
        conn.execute(
            insert(AckWatermark),
            [{"device_id": d, "epoch": e, "seq": 5, "updated_at": datetime.now(UTC)}
             for _s, d, e in keys],
        )  # fmt: skip
    svc._acked = dict.fromkeys(keys, 3)
    svc._acked_lately = set(keys)
    svc._next_ack_resync = 0.0
    checked = []
    for _ in range(3):
        svc._resync_acks()
        checked.append(sum(seq == 5 for seq in svc._acked.values()))
    assert checked == [ACK_REPUBLISH_CHUNK, 2 * ACK_REPUBLISH_CHUNK, n]
    assert svc.metrics.total("acks_republished_total") == n
