"""How ingest cuts batches (`IngestService._collect`): at most batch_ms after the first
message *arrived*, so a message that already waited for a busy store process is not held
back a second time."""

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
