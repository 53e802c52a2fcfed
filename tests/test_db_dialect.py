"""The database helpers that write SQL text themselves (cloud/db/dialect.py), against the
real MariaDB and SQLite: hostile strings from devices must come back exactly as sent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from earwitness.cloud.db import dialect
from earwitness.cloud.db.engine import make_engine, transaction
from earwitness.cloud.db.models import AckWatermark, Heartbeat, table_of

HOSTILE = [
    "plain",
    "it's",
    'say "hi"',
    "back\\slash\\",
    "trailing backslash \\",
    "\\' OR 1=1 -- ",
    "'); DROP TABLE heartbeats; --",
    "%s %d %(x)s %%",
    "nul\x00byte",
    "ctrl-z \x1a newline \n return \r tab \t",
    "ünïcødé ✓ 🎧 𝄞",
    "",
]


def heartbeat_rows(device: str, payloads: list[str]) -> list[dict[str, object]]:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    return [
        {
            "message_id": f"{value}{uuid.uuid4().hex[:8]}",  # a string column, raw
            "device_id": device,
            "seq": i,
            "ts": now + timedelta(seconds=i),
            "uptime_s": 1.5 * i,
            "windows_dropped": 0,
            "outbox_rows": 0,
            "outbox_dropped": 0,
            "clips_blocked_privacy": 0,
            "cpu_temp_c": None,
            "payload": {"text": value, "n": i, "f": 0.1 * i, "none": None},  # JSON
            "received_at": now,
        }
        for i, value in enumerate(payloads)
    ]


def stored(engine, device: str) -> list[tuple[object, ...]]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        query = (
            select(Heartbeat.message_id, Heartbeat.payload, Heartbeat.uptime_s, Heartbeat.seq)
            .where(Heartbeat.device_id == device)
            .order_by(Heartbeat.seq)
        )
        return [tuple(r) for r in conn.execute(query)]


def sent(rows: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [(r["message_id"], r["payload"], r["uptime_s"], r["seq"]) for r in rows]


def test_hostile_strings_round_trip_through_insert_ignore(db_url: str) -> None:
    engine = make_engine(db_url)
    device = "dev-'\\\"%s-" + uuid.uuid4().hex[:6]
    rows = heartbeat_rows(device, HOSTILE)
    with transaction(engine) as session:
        assert dialect.insert_ignore(session, table_of(Heartbeat), rows, "message_id") == len(rows)
    with transaction(engine) as session:  # every one again: all duplicates
        assert dialect.insert_ignore(session, table_of(Heartbeat), rows, "message_id") == 0
    assert stored(engine, device) == sent(rows)
    engine.dispose()


@pytest.mark.mariadb
def test_insert_ignore_under_no_backslash_escapes_and_in_many_statements(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server whose sql_mode has NO_BACKSLASH_ESCAPES reads a backslash as itself; and a
    batch larger than one statement is cut into several, counted right."""
    from earwitness.cloud.db.migrate import upgrade
    from tests.services import mariadb_database

    monkeypatch.setattr(dialect, "MAX_STATEMENT_BYTES", 2_000)  # a few rows per statement
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        device = "dev-nbe-" + uuid.uuid4().hex[:6]
        rows = heartbeat_rows(device, HOSTILE * 4)
        with transaction(engine) as session:
            session.execute(
                text("SET SESSION sql_mode = CONCAT(@@sql_mode, ',NO_BACKSLASH_ESCAPES')")
            )
            statements = []
            real = dialect._statements

            def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
                for statement in real(*args, **kwargs):
                    assert len(statement.encode()) <= 2_000
                    statements.append(statement)
                    yield statement

            monkeypatch.setattr(dialect, "_statements", counted)
            inserted = dialect.insert_ignore(session, table_of(Heartbeat), rows, "message_id")
        assert inserted == len(rows)
        assert len(statements) > 3
        assert stored(engine, device) == sent(rows)
        engine.dispose()


def test_rows_with_keys_reads_hostile_keys(db_url: str) -> None:
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    keys = [(f"dev{value}{uuid.uuid4().hex[:4]}"[:64], f"e{i}") for i, value in enumerate(HOSTILE)]
    table = table_of(AckWatermark)
    with transaction(engine) as session:
        marks = [
            {"device_id": d, "epoch": e, "seq": i, "updated_at": now}
            for i, (d, e) in enumerate(keys)
        ]
        dialect.insert_ignore(session, table, marks, "device_id")
    with transaction(engine) as session:
        got = dialect.rows_with_keys(
            session, table, ("device_id", "epoch", "seq"), ("device_id", "epoch"), keys[::-1], True
        )
    assert sorted(got) == sorted((d, e, i) for i, (d, e) in enumerate(keys))  # (collation order)
    engine.dispose()


def test_upsert_writes_hostile_strings_and_updates_on_conflict(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``upsert`` on MySQL writes its rows as literals (``_mysql_literal_upsert``): hostile
    device ids and sites come back exactly, existing rows take the update clause, and a
    column the rows leave out gets its default (``devices.pinned``)."""
    from earwitness.cloud.db.models import Device
    from earwitness.cloud.db.repo import devices

    literal_calls: list[bool] = []
    real = dialect._mysql_literal_upsert

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        literal_calls.append(real(*args, **kwargs))
        return literal_calls[-1]

    monkeypatch.setattr(dialect, "_mysql_literal_upsert", spy)
    engine = make_engine(db_url)
    t0 = datetime(2026, 12, 7, 12, 0, 0, 123456, tzinfo=UTC)
    ids = [f"d{i}-{value}"[:64] for i, value in enumerate(HOSTILE)]

    def row(i: int, device: str, seen: datetime, lat: float | None) -> dict[str, object]:
        return {
            "id": device,
            "site": HOSTILE[i][:64],
            "first_seen": seen,
            "last_seen": seen,
            "lat": lat,
            "lon": None,
            "model_id": f"m{HOSTILE[i]}"[:64],
            "software_version": None,
            "online": False,
        }

    with transaction(engine) as session:
        devices.record_seen(session, [row(i, d, t0, 1.5) for i, d in enumerate(ids)])
    later = t0 + timedelta(seconds=90)
    with transaction(engine) as session:  # all conflict now: last_seen moves, lat is kept
        devices.record_seen(session, [row(i, d, later, None) for i, d in enumerate(ids)])
    with engine.connect() as conn:
        got = {
            r.id: r
            for r in conn.execute(
                select(Device.id, Device.site, Device.last_seen, Device.lat, Device.pinned).where(
                    Device.id.in_(ids)
                )
            )
        }
    assert sorted(got) == sorted(ids)
    for i, device in enumerate(ids):
        assert got[device].site == HOSTILE[i][:64]
        assert got[device].last_seen == later.replace(microsecond=123000)  # DATETIME(3)
        assert got[device].lat == 1.5
        assert got[device].pinned is False
    if db_url.startswith("mysql"):
        assert literal_calls == [True, True]  # not SQLAlchemy's executemany
    engine.dispose()


def test_datetime_literals_are_what_pymysql_writes() -> None:
    """Naive datetimes are written as literals here, not by PyMySQL: the text must be the
    driver's own, with and without microseconds, at both ends of the range."""
    from pymysql.converters import escape_datetime

    plan = dialect._InsertPlan("INSERT INTO t (a) VALUES ", "(%s)", "", (None,))
    values = [
        datetime(2026, 12, 7, 12, 0, 0),
        datetime(2026, 12, 7, 12, 0, 0, 1000),
        datetime(1, 1, 1, 0, 0, 0, 1),
        datetime(9999, 12, 31, 23, 59, 59, 999999),
    ]
    for value in values:
        (statement,) = dialect._statements(plan, [(value,)], str, "utf-8")
        assert statement == f"INSERT INTO t (a) VALUES ({escape_datetime(value)})"
