"""The soak's verdict can fail: a clean short replay passes, then each kind of loss the soak
exists to catch (a stored row gone, an outbox row left behind, a seq stored twice) makes it
report FAIL. Real agent, broker, ingest and MariaDB, as in bench/soak.py."""

from __future__ import annotations

import argparse
import sqlite3
from collections.abc import Iterator

import pymysql
import pytest

from bench.soak import Soak, finish_and_verify, soak_run
from tests.services import require


@pytest.fixture(scope="module")
def finished() -> Iterator[Soak]:
    require("127.0.0.1", 3306, "MariaDB")
    args = argparse.Namespace(devices=1, audio_s=40, speed=20, keep=False)
    with soak_run(args) as s:
        report = finish_and_verify(s, timeout=120)
        assert report.failures == [], report.failures
        assert len(report.facts) >= 9
        yield s


def _sql(s: Soak, statement: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", user="root", database=s.db_name, autocommit=True)
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def _failures(s: Soak) -> list[str]:
    return finish_and_verify(s, timeout=5).failures


def test_a_deleted_row_fails_the_soak(finished: Soak) -> None:
    _sql(finished, "CREATE TABLE kept AS SELECT * FROM inferences ORDER BY seq DESC LIMIT 1")
    _sql(finished, "DELETE FROM inferences ORDER BY seq DESC LIMIT 1")
    try:
        failures = _failures(finished)
        assert any("inference rows ==" in f for f in failures), failures
    finally:
        _sql(finished, "INSERT INTO inferences SELECT * FROM kept")
        _sql(finished, "DROP TABLE kept")
    assert _failures(finished) == []


def test_a_row_left_in_the_outbox_fails_the_soak(finished: Soak) -> None:
    device = finished.device_ids()[0]
    with sqlite3.connect(finished.outbox(device)) as db:
        db.execute(
            "INSERT INTO outbox (seq, kind, topic, payload, size, created)"
            " VALUES (999999, 'inference', 't', x'00', 1, 0)"
        )
    try:
        failures = _failures(finished)
        assert any("outbox empty (1 rows left)" in f for f in failures), failures
    finally:
        with sqlite3.connect(finished.outbox(device)) as db:
            db.execute("DELETE FROM outbox WHERE seq = 999999")


def test_a_seq_stored_twice_fails_the_soak(finished: Soak) -> None:
    _sql(
        finished,
        "INSERT INTO heartbeats (message_id, device_id, seq, ts, uptime_s, windows_dropped,"
        " outbox_rows, outbox_dropped, clips_blocked_privacy, payload, received_at)"
        " SELECT CONCAT('dup', message_id), device_id, seq, window_start, 1, 0, 0, 0, 0, '{}',"
        " received_at FROM inferences LIMIT 1",
    )
    try:
        failures = _failures(finished)
        assert any("no seq stored twice (1 duplicates)" in f for f in failures), failures
        assert any("every message id is" in f for f in failures), failures
    finally:
        _sql(finished, "DELETE FROM heartbeats WHERE message_id LIKE 'dup%'")
