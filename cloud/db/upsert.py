"""Dialect-specific idempotent inserts, kept in one place."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Executable, Table
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert


def _is_mysql(conn: Connection) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


def insert_ignore(conn: Connection, table: Table, rows: list[dict[str, Any]], key: str) -> int:
    """Insert rows, skipping those whose unique key exists. Returns rows inserted.

    ``key`` names a column of the unique key that conflicts; on MySQL it is assigned to
    itself, so it must never be a column whose value could differ (never a data column).

    MySQL: ``INSERT ... ON DUPLICATE KEY UPDATE key = key`` (a no-op that, unlike INSERT
    IGNORE, does not also swallow data errors). SQLite: ``ON CONFLICT DO NOTHING``.
    """
    if not rows:
        return 0
    stmt: Executable
    if _is_mysql(conn):
        mstmt = mysql_insert(table)
        # Affected-rows is 1 per insert and 0 per no-op duplicate.
        stmt = mstmt.on_duplicate_key_update({key: mstmt.inserted[key]})
    else:
        stmt = sqlite_insert(table).on_conflict_do_nothing()
    result = conn.execute(stmt, rows)
    return max(0, int(result.rowcount))
