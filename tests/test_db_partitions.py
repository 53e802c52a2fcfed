"""Monthly partitions of inferences on the real MariaDB (cloud/db/partitions.py): the
migration partitions a table that already holds months of rows, a re-sent message is
still stored once, retention drops whole months and deletes only the rest row by row,
and partitions for the coming months are created ahead."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db import migrate, partitions
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.models import Inference
from earwitness.cloud.ingest.store import BatchStore
from earwitness.cloud.ingest.validate import Limits, RawMessage, prepare
from earwitness.cloud.prune import prune
from earwitness.shared.topics import Kind
from tests.factories import Device, wire
from tests.services import mariadb_database

pytestmark = pytest.mark.mariadb


def _store(engine, store_dir: Path, dev: Device, seqs: range) -> int:  # type: ignore[no-untyped-def]
    batch = [
        RawMessage(dev.topic(Kind.INFERENCE), wire(dev.inference(s)), datetime.now(UTC))
        for s in seqs
    ]
    result = BatchStore(engine).store(prepare(batch, FileClipStore(store_dir), Limits(2**19, 4096)))
    return result.stored


def _count(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Inference)).scalar_one())


def test_months_are_partitions_and_retention_drops_them(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    this_month = partitions.month_start(now)
    two_ago = partitions.month_start(this_month - timedelta(days=40))
    with mariadb_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine, "0008")  # an existing install with months of rows
        old = Device("s1", "old", t0=datetime(two_ago.year, two_ago.month, 3, tzinfo=UTC))
        new = Device("s1", "new", t0=now - timedelta(minutes=5))
        assert _store(engine, tmp_path, old, range(100)) == 100
        assert _store(engine, tmp_path, new, range(100)) == 100
        migrate.upgrade(engine)  # 0009 partitions what is there

        with engine.connect() as conn:
            names = [p.name for p in partitions.list_partitions(conn)]
        assert names[0] == partitions.name_of(two_ago) and names[-1] == "pmax"
        assert partitions.name_of(this_month) in names
        assert len(names) == 3 + partitions.MONTHS_AHEAD + 1  # two ago .. three ahead, pmax

        # Idempotent as before: the same messages again store nothing.
        assert _store(engine, tmp_path, old, range(100)) == 0
        assert _store(engine, tmp_path, new, range(50, 150)) == 50
        assert _count(engine) == 250

        # A day of retention: two months ago goes as a partition; "mid" (two days old)
        # goes with its partition if that month is over by the cutoff, by rows if not.
        mid = Device("s1", "mid", t0=now - timedelta(days=2))
        assert _store(engine, tmp_path, mid, range(100)) == 100
        counts = prune(engine, timedelta(days=1))
        assert counts["inferences"] == 200
        assert _count(engine) == 150  # the new device's rows, all of them
        with engine.connect() as conn:
            names_after = [p.name for p in partitions.list_partitions(conn)]
        assert partitions.name_of(two_ago) not in names_after
        assert partitions.name_of(this_month) in names_after

        # A clock in the future lands in pmax; rolling ahead splits pmax around it.
        future = Device("s1", "future", t0=datetime(2199, 1, 1, tzinfo=UTC))
        assert _store(engine, tmp_path, future, range(3)) == 3
        later = this_month
        for _ in range(6):
            later = partitions.next_month(later)
        created = partitions.roll(engine, today=later)
        assert created and created[-1] == partitions.name_of(
            partitions.next_month(partitions.next_month(partitions.next_month(later)))
        )
        with engine.connect() as conn:
            final = partitions.list_partitions(conn)
        assert final[-1].name == "pmax" and _count(engine) == 153
        assert partitions.roll(engine, today=later) == []  # nothing more to create
        engine.dispose()


def test_month_arithmetic() -> None:
    assert partitions.next_month(date(2026, 12, 1)) == date(2027, 1, 1)
    assert partitions.next_month(date(2027, 1, 1)) == date(2027, 2, 1)
    assert partitions.name_of(date(2027, 3, 1)) == "p202703"
    assert partitions.month_start(datetime(2026, 2, 28, 23, 59, tzinfo=UTC)) == date(2026, 2, 1)


def test_db_partitions_command_creates_past_months(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from earwitness.cli import main

    this_month = partitions.month_start(datetime.now(UTC))
    back = partitions.month_start(this_month - timedelta(days=70))  # two or three months
    with mariadb_database() as url:
        monkeypatch.setenv("EARWITNESS_DATABASE_URL", url)
        assert main(["db", "upgrade"]) == 0
        capsys.readouterr()
        assert main(["db", "partitions", "--since", f"{back:%Y-%m}"]) == 0
        listed = [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()]
        month, expected = back, []
        while month <= this_month:
            expected.append(partitions.name_of(month))
            month = partitions.next_month(month)
        assert listed[: len(expected)] == expected and listed[-1] == "pmax"
        assert main(["db", "partitions", "--since", "2026-13"]) == 2
        assert "use YYYY-MM" in capsys.readouterr().err
