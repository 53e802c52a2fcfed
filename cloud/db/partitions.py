"""Monthly partitions of the largest table on MySQL/MariaDB: retention drops a month in one
metadata operation instead of deleting millions of rows, and queries over a time range
read only the months they need.

``inferences`` (one row per 0.48 s window per device: over 95 % of all rows) is
partitioned ``BY RANGE COLUMNS(window_start)`` into ``pYYYYMM`` partitions, one per
calendar month (UTC), plus ``pmax`` for anything later (a device with a clock in the
future). The oldest partition also holds everything before its month (a device that
booted in 1970). MySQL requires every unique key to contain the partitioning column, so
the primary key is ``(id, window_start)`` and the idempotency key ``(message_id,
window_start)``: a re-sent message carries the same window, so it is still stored once.

SQLite has no partitions: every function here is a no-op there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, Engine, text

from earwitness.cloud.db.dialect import is_mysql

TABLE = "inferences"
COLUMN = "window_start"
MONTHS_AHEAD = 3
"""Months created beyond the current one, so a month boundary never finds ingest
writing into ``pmax`` (from which a later split has to copy rows)."""


@dataclass(frozen=True)
class Partition:
    name: str
    below: date | None  # exclusive upper bound; None for pmax
    rows: int  # the engine's estimate (information_schema), exact only after ANALYZE


def month_start(day: date | datetime) -> date:
    return date(day.year, day.month, 1)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def name_of(month: date) -> str:
    return f"p{month.year:04d}{month.month:02d}"


def _months(first: date, stop: date) -> list[tuple[str, str]]:
    """(name, definition) of a partition per month from ``first`` up to, not including,
    ``stop``."""
    out, month = [], first
    while month < stop:
        out.append(
            (name_of(month), f"PARTITION {name_of(month)} VALUES LESS THAN ('{next_month(month)}')")
        )
        month = next_month(month)
    return out


def _months_after(today: date | None, n: int) -> date:
    """The month ``n`` months after the current (or ``today``'s) one."""
    month = month_start(today or datetime.now(UTC).date())
    for _ in range(n):
        month = next_month(month)
    return month


PMAX = "PARTITION pmax VALUES LESS THAN (MAXVALUE)"


def is_partitioned(conn: Connection) -> bool:
    return bool(list_partitions(conn))


def list_partitions(conn: Connection) -> list[Partition]:
    if not is_mysql(conn):
        return []
    rows = conn.execute(
        text(
            "SELECT PARTITION_NAME, PARTITION_DESCRIPTION, TABLE_ROWS"
            " FROM information_schema.PARTITIONS WHERE TABLE_SCHEMA = DATABASE()"
            " AND TABLE_NAME = :t AND PARTITION_NAME IS NOT NULL"
            " ORDER BY PARTITION_ORDINAL_POSITION"
        ),
        {"t": TABLE},
    ).all()
    out = []
    for name, description, count in rows:
        bound = str(description).strip("'")
        below = None if bound.upper() == "MAXVALUE" else date.fromisoformat(bound[:10])
        out.append(Partition(str(name), below, int(count or 0)))
    return out


def partition_table(conn: Connection, today: date | None = None) -> None:
    """Partition ``inferences`` by month (the migration): from the month of its oldest row
    (or the current one) to ``MONTHS_AHEAD`` months ahead. Rewrites the table once."""
    if not is_mysql(conn) or is_partitioned(conn):
        return
    now = _months_after(today, 0)
    oldest = conn.execute(text(f"SELECT MIN({COLUMN}) FROM {TABLE}")).scalar()
    first = min(now, month_start(oldest)) if oldest is not None else now
    first = max(first, date(now.year - 5, now.month, 1))  # older rows share the first month
    conn.execute(
        text(
            f"ALTER TABLE {TABLE} DROP PRIMARY KEY, ADD PRIMARY KEY (id, {COLUMN}),"
            f" DROP INDEX message_id, ADD UNIQUE KEY uq_inferences_message (message_id, {COLUMN})"
        )
    )
    months = _months(first, _months_after(today, MONTHS_AHEAD + 1))
    definitions = ", ".join([*(d for _, d in months), PMAX])
    conn.execute(text(f"ALTER TABLE {TABLE} PARTITION BY RANGE COLUMNS({COLUMN}) ({definitions})"))


def unpartition_table(conn: Connection) -> None:
    """The migration's downgrade: one table again, the original keys."""
    if not is_mysql(conn) or not is_partitioned(conn):
        return
    conn.execute(text(f"ALTER TABLE {TABLE} REMOVE PARTITIONING"))
    conn.execute(
        text(
            f"ALTER TABLE {TABLE} DROP PRIMARY KEY, ADD PRIMARY KEY (id),"
            " DROP INDEX uq_inferences_message, ADD UNIQUE KEY message_id (message_id)"
        )
    )


def roll(engine: Engine, today: date | None = None) -> list[str]:
    """Create the partitions up to ``MONTHS_AHEAD`` months ahead by splitting ``pmax``;
    returns the names created. Cheap while ``pmax`` is empty, as it is when this runs
    at least monthly (``earwitness db prune`` and ``db partitions`` call it)."""
    with engine.begin() as conn:
        parts = list_partitions(conn)
        if not parts:
            return []
        last = max(p.below for p in parts if p.below is not None)  # first month not covered
        months = _months(last, _months_after(today, MONTHS_AHEAD + 1))
        if months:
            split = ", ".join([*(d for _, d in months), PMAX])
            conn.execute(text(f"ALTER TABLE {TABLE} REORGANIZE PARTITION pmax INTO ({split})"))
        return [name for name, _ in months]


def extend_back(engine: Engine, since: date) -> list[str]:
    """Monthly partitions back to ``since`` (an import of older data, a restore): splits
    the oldest partition, which holds everything below its month, so it copies that
    partition's rows once. Returns the names created."""
    with engine.begin() as conn:
        parts = list_partitions(conn)
        if not parts or parts[0].below is None:
            return []
        first = parts[0]
        assert first.below is not None
        first_month = month_start(first.below - timedelta(days=1))
        since = month_start(since)
        if since >= first_month:
            return []
        months = _months(since, first_month)
        kept = f"PARTITION {first.name} VALUES LESS THAN ('{first.below}')"
        split = ", ".join([*(d for _, d in months), kept])
        conn.execute(text(f"ALTER TABLE {TABLE} REORGANIZE PARTITION {first.name} INTO ({split})"))
        return [name for name, _ in months]


def drop_before(engine: Engine, cutoff: datetime) -> dict[str, int]:
    """Drop every month that ends at or before ``cutoff`` (keeping at least one monthly
    partition, which then also takes anything older). Returns each dropped partition's
    exact row count, counted just before the drop."""
    dropped: dict[str, int] = {}
    with engine.begin() as conn:
        months = [(p.name, p.below) for p in list_partitions(conn) if p.below is not None]
        doomed = [name for name, below in months if below <= cutoff.date()]
        doomed = doomed[: max(0, len(months) - 1)]
        for name in doomed:
            rows = conn.execute(text(f"SELECT COUNT(*) FROM {TABLE} PARTITION ({name})"))
            dropped[name] = int(rows.scalar_one())
            conn.execute(text(f"ALTER TABLE {TABLE} DROP PARTITION {name}"))
    return dropped
