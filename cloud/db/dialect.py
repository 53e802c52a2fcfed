"""Everything that differs between MySQL/MariaDB and SQLite, in one place.

Repositories call these helpers instead of asking which database they are on: idempotent
inserts, upserts, ``GREATEST`` and row locks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Executable,
    Integer,
    Select,
    Table,
    func,
    select,
    tuple_,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

Bind = Session | Connection | Engine


def is_mysql(bind: Bind) -> bool:
    """MySQL or MariaDB (both speak the MySQL dialect here); anything else is SQLite."""
    dialect = bind.get_bind().dialect if isinstance(bind, Session) else bind.dialect
    return dialect.name in ("mysql", "mariadb")


def _connection(session: Session) -> Connection:
    return session.connection()


def greatest(session: Session, a: Any, b: Any) -> ColumnElement[Any]:
    """The larger of two values: GREATEST on MySQL, two-argument MAX on SQLite."""
    return func.greatest(a, b) if is_mysql(session) else func.max(a, b)


# Unbounded: Select is invariant in its row type, so a bound would reject Select[str, int].
SelectT = TypeVar("SelectT")


def hour_bucket(session: Session, column: Any) -> ColumnElement[Any]:
    """The start of the UTC hour a timestamp falls in, as text ``YYYY-MM-DD HH:00:00``,
    computed by the database so that counting per hour needs no rows in Python."""
    if is_mysql(session):
        return func.date_format(column, "%Y-%m-%d %H:00:00")
    return func.strftime("%Y-%m-%d %H:00:00", column)


def epoch_seconds(session: Session, column: Any) -> ColumnElement[Any]:
    """Seconds since 1970 of a UTC timestamp column (the engine's sessions run in UTC)."""
    if is_mysql(session):
        return func.unix_timestamp(column)
    return sql_cast(func.strftime("%s", column), Integer)


def time_bucket(session: Session, column: Any, start: datetime, bucket_s: int) -> Any:
    """Which ``bucket_s``-long bucket after ``start`` a timestamp falls in (0, 1, ...),
    computed by the database so charts of any range group there."""
    offset = epoch_seconds(session, column) - int(start.timestamp())
    return func.floor(offset / bucket_s)


def same_text(session: Session, column: Any, value: str) -> ColumnElement[bool]:
    """``column = value`` ignoring case, as a person typing ``siren`` for ``Siren`` means.
    MySQL's utf8mb4_unicode_ci columns compare so already (and keep their index); SQLite
    needs ``COLLATE NOCASE``."""
    if is_mysql(session):
        return cast(ColumnElement[bool], column == value)
    return cast(ColumnElement[bool], column.collate("NOCASE") == value)


def lock_rows(session: Session, query: SelectT, skip_locked: bool = False) -> SelectT:
    """``FOR UPDATE`` (optionally ``SKIP LOCKED``) where the database has row locks; SQLite
    serializes writers instead, so the query is returned unchanged there."""
    if not is_mysql(session):
        return query
    return cast(SelectT, cast(Select[Any], query).with_for_update(skip_locked=skip_locked))


# What an upsert writes on conflict, given the proposed row (MySQL ``inserted``, SQLite
# ``excluded``) and the table: column name -> SQL expression.
UpdateBuilder = Callable[[Any, Table], Mapping[str, Any]]


def upsert(
    session: Session,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    conflict_columns: Sequence[str],
    on_conflict: UpdateBuilder,
) -> None:
    """Insert rows; where ``conflict_columns`` (a unique key) already exist, update the
    stored row with ``on_conflict(proposed, table)``."""
    if not rows:
        return
    if is_mysql(session):
        mstmt = mysql_insert(table)
        upsert_stmt = mstmt.on_duplicate_key_update(**on_conflict(mstmt.inserted, table))
        if _mysql_literal_upsert(_connection(session), table, upsert_stmt, rows):
            return
        stmt: Executable = upsert_stmt
    else:
        sstmt = sqlite_insert(table)
        stmt = sstmt.on_conflict_do_update(
            index_elements=list(conflict_columns), set_=dict(on_conflict(sstmt.excluded, table))
        )
    session.execute(stmt, list(rows))


def insert_ignore(
    session: Session, table: Table, rows: Sequence[Mapping[str, Any]], key: str
) -> int:
    """Insert rows, skipping those whose unique key exists. Returns rows inserted.

    ``key`` names a column of the unique key that conflicts; on MySQL it is assigned to
    itself, so it must never be a column whose value could differ (never a data column).

    MySQL: ``INSERT ... ON DUPLICATE KEY UPDATE key = key`` (a no-op that, unlike INSERT
    IGNORE, does not also swallow data errors). SQLite: ``ON CONFLICT DO NOTHING``.
    """
    if not rows:
        return 0
    conn = _connection(session)
    if is_mysql(session):
        return _mysql_insert_ignore(conn, table, rows, key)
    stmt: Executable = sqlite_insert(table).on_conflict_do_nothing()
    return max(0, int(conn.execute(stmt, list(rows)).rowcount))


def rows_with_keys(
    session: Session,
    table: Table,
    columns: Sequence[str],
    keys: Sequence[str],
    values: Sequence[tuple[Any, ...]],
    for_update: bool = False,
) -> list[tuple[Any, ...]]:
    """``SELECT columns WHERE (keys) IN (values) ORDER BY columns``, optionally locking the
    rows (MySQL; SQLite serializes writers). On MySQL through the driver: SQLAlchemy
    expanding a tuple IN of thousands of keys per batch cost a store process more than
    the database's own lookup. Key columns must need no bind processing (strings, ints)."""
    if not values:
        return []
    if not is_mysql(session):
        query = (
            select(*(table.c[c] for c in columns))
            .where(tuple_(*(table.c[k] for k in keys)).in_(list(values)))
            .order_by(*(table.c[c] for c in columns))
        )
        return [tuple(row) for row in session.execute(query)]
    conn = _connection(session)
    sql = _mysql_keys_select(table, tuple(columns), tuple(keys), conn.dialect)
    # one key: a plain IN list
    row = "%s" if len(keys) == 1 else "(" + ", ".join(["%s"] * len(keys)) + ")"
    # One statement: the database takes the locks in its own key order (its collation,
    # not Python's), so every writer locks in one order. Sorted only to be repeatable.
    keys_in = sorted(set(values))
    text = sql.replace("{rows}", ", ".join([row] * len(keys_in)))
    flat = tuple(v for key in keys_in for v in key)
    result = conn.exec_driver_sql(text + (" FOR UPDATE" if for_update else ""), flat)
    return [tuple(r) for r in result]


@lru_cache(maxsize=64)
def _mysql_keys_select(
    table: Table, columns: tuple[str, ...], keys: tuple[str, ...], dialect: Dialect
) -> str:
    for k in keys:
        if table.c[k].type._cached_bind_processor(dialect) is not None:
            raise TypeError(f"{table.name}.{k} needs bind processing; not a plain key column")
    quote = dialect.identifier_preparer.quote
    cols = ", ".join(quote(table.c[c].name) for c in columns)
    key_cols = ", ".join(quote(table.c[k].name) for k in keys)
    if len(keys) > 1:
        key_cols = f"({key_cols})"
    name = dialect.identifier_preparer.format_table(table)
    return f"SELECT {cols} FROM {name} WHERE {key_cols} IN ({{rows}}) ORDER BY {cols}"


Processor = Callable[[Any], Any] | None


MAX_STATEMENT_BYTES = 1_000_000
"""Multi-row inserts are cut into statements of at most this many bytes (PyMySQL's own
``executemany`` cuts at 1,024,000), far below MariaDB's default 16 MiB
``max_allowed_packet`` and above the 1 MiB such settings are rarely set below."""


@dataclass(frozen=True)
class _InsertPlan:
    prefix: str  # INSERT INTO t (a, b) VALUES
    row: str  # (%s, %s)
    suffix: str  # ON DUPLICATE KEY UPDATE key = key
    procs: tuple[Processor, ...]


@lru_cache(maxsize=64)
def _mysql_plan(table: Table, columns: tuple[str, ...], key: str, dialect: Dialect) -> _InsertPlan:
    """The statement's parts and each column's own SQLAlchemy bind processor (UTC
    datetimes, JSON), computed once per table and column set instead of once per row."""
    missing = [c for c in (*columns, key) if c not in table.c]
    if missing:
        raise KeyError(f"{table.name} has no column(s) {missing}")
    names = ", ".join(dialect.identifier_preparer.quote(c) for c in columns)
    quoted_key = dialect.identifier_preparer.quote(key)
    table_name = dialect.identifier_preparer.format_table(table)
    return _InsertPlan(
        prefix=f"INSERT INTO {table_name} ({names}) VALUES ",
        row="(" + ", ".join(["%s"] * len(columns)) + ")",
        suffix=f" ON DUPLICATE KEY UPDATE {quoted_key} = {quoted_key}",
        procs=tuple(table.c[c].type._cached_bind_processor(dialect) for c in columns),
    )


_NAMED = re.compile(r"%\((\w+)\)s")
_VALUES_ROW = re.compile(r"\((?:%s|%\(\w+\)s)(?:, (?:%s|%\(\w+\)s))*\)")


def _upsert_plan(
    table: Table, stmt: Any, columns: tuple[str, ...], dialect: Dialect
) -> tuple[_InsertPlan, tuple[str, ...], dict[str, Any]] | None:
    """The upsert SQLAlchemy writes for one row, cut into the parts ``_statements`` repeats
    per row, and the columns in the order it placed them. None when the statement is not
    of that plain shape (an update clause with its own parameters, a literal %): then
    SQLAlchemy executes it. Columns the rows leave out get their constant default."""
    compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
    sql = compiled.string
    start = sql.find(" VALUES (")
    values = _VALUES_ROW.match(sql, start + len(" VALUES ")) if start >= 0 else None
    if values is None:
        return None
    row = values.group(0)
    if compiled.positiontup is not None:  # paramstyle "format"
        order = tuple(compiled.positiontup)
        expected = "(" + ", ".join(["%s"] * len(order)) + ")"
    else:  # "pyformat", what create_engine sets up for PyMySQL
        order = tuple(_NAMED.findall(row))
        expected = "(" + ", ".join(f"%({name})s" for name in order) + ")"
    suffix = sql[values.end() :]
    defaults = {c: _scalar_default(table, c) for c in order if c not in columns}
    if (
        row != expected
        or not set(columns) <= set(order)
        or any(value is _NO_DEFAULT for value in defaults.values())  # the update's own
        or "%" in suffix
    ):
        return None
    procs = tuple(table.c[c].type._cached_bind_processor(dialect) for c in order)
    return _InsertPlan(sql[:start] + " VALUES ", row, suffix, procs), order, defaults


_NO_DEFAULT = object()


def _scalar_default(table: Table, name: str) -> Any:
    """A column's constant Python-side default (SQLAlchemy adds it to the INSERT when a row
    leaves the column out), or _NO_DEFAULT."""
    if name not in table.c:
        return _NO_DEFAULT
    default = table.c[name].default
    if default is None or not getattr(default, "is_scalar", False):
        return _NO_DEFAULT
    return default.arg  # type: ignore[attr-defined]


def _mysql_literal_upsert(
    conn: Connection, table: Table, stmt: Any, rows: Sequence[Mapping[str, Any]]
) -> bool:
    """An upsert of many rows as multi-row statements of literals, as ``insert_ignore``
    writes them: SQLAlchemy's executemany cost a fleet batch's store process about 10 µs
    per row (the ack watermarks of 1,000 devices per batch). False when this does not
    apply (another driver, rows of different columns, an unusual statement)."""
    import pymysql  # the MySQL driver: only where a MySQL URL is configured

    driver = conn.connection.driver_connection
    columns = tuple(rows[0])
    if not isinstance(driver, pymysql.connections.Connection) or any(
        tuple(row) != columns for row in rows
    ):
        return False
    planned = _upsert_plan(table, stmt, columns, conn.dialect)
    if planned is None:
        return False
    plan, order, defaults = planned
    params = _processed(
        [[row[c] if c in row else defaults[c] for c in order] for row in rows], plan.procs
    )
    _run_statements(conn, driver, plan, params)
    return True


def _processed(rows: list[list[Any]], procs: Sequence[Processor]) -> list[list[Any]]:
    """Each row's values through their columns' bind processors, in place: only the
    columns that have one are visited (a fleet's inference row has 24 columns, 5 with a
    processor)."""
    todo = [(i, proc) for i, proc in enumerate(procs) if proc is not None]
    for row in rows:
        for i, proc in todo:
            row[i] = proc(row[i])
    return rows


def _mysql_insert_ignore(
    conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], key: str
) -> int:
    """Many rows as multi-row statements without SQLAlchemy's per-row statement machinery,
    which cost more than the database at 10,000 rows/s. Rows must all have the same keys
    (they come from one row builder)."""
    columns = tuple(rows[0])
    if any(tuple(row) != columns for row in rows):
        raise ValueError(f"{table.name}: rows with different columns in one insert")
    plan = _mysql_plan(table, columns, key, conn.dialect)
    params = _processed([list(row.values()) for row in rows], plan.procs)
    import pymysql  # the MySQL driver: only where a MySQL URL is configured

    driver = conn.connection.driver_connection
    if not isinstance(driver, pymysql.connections.Connection):  # another driver: its own
        result = conn.exec_driver_sql(
            plan.prefix + plan.row + plan.suffix, [tuple(p) for p in params]
        )
        return max(0, int(result.rowcount))
    return _run_statements(conn, driver, plan, params)


def _run_statements(conn: Connection, driver: Any, plan: _InsertPlan, rows: list[list[Any]]) -> int:
    """Write the rows as ``_statements``; the rows the database reports as inserted."""
    inserted = 0
    for statement in _statements(plan, rows, driver.escape, driver.encoding):
        # no_parameters: the text goes to the driver as it is, never %-formatted again
        result = conn.exec_driver_sql(statement, execution_options={"no_parameters": True})
        inserted += max(0, int(result.rowcount))
    return inserted


def _statements(
    plan: _InsertPlan,
    rows: Sequence[Sequence[Any]],
    escape: Callable[[Any], str],
    encoding: str,
) -> Iterator[str]:
    """Multi-row INSERT statements with every value as an SQL literal, as PyMySQL's
    ``executemany`` writes them, cut at MAX_STATEMENT_BYTES. NULL, ints, floats and naive
    datetimes are written here (they were half of a fleet batch's cost in PyMySQL's per-value
    dispatch); strings, aware datetimes and everything else go through the driver's own
    ``escape``, which honours the session's NO_BACKSLASH_ESCAPES."""
    from pymysql.converters import escape_float

    fixed = len(plan.prefix.encode(encoding)) + len(plan.suffix.encode(encoding))
    chunk: list[str] = []
    size = fixed
    for row in rows:
        parts = []
        for value in row:
            kind = type(value)
            if value is None:
                parts.append("NULL")
            elif kind is int:  # exactly int: a bool goes to the driver
                parts.append(str(value))
            elif kind is float:
                parts.append(escape_float(value))  # PyMySQL's: refuses inf and nan
            elif kind is datetime and value.tzinfo is None:
                # PyMySQL's escape_datetime writes the same text through str.format, at
                # five times the cost (a fleet batch holds two per inference row).
                parts.append("'" + value.isoformat(" ") + "'")
            else:
                parts.append(escape(value))
        literal = "(" + ",".join(parts) + ")"
        length = len(literal) if literal.isascii() else len(literal.encode(encoding))
        if chunk and size + length + 1 > MAX_STATEMENT_BYTES:
            yield plan.prefix + ",".join(chunk) + plan.suffix
            chunk, size = [], fixed
        chunk.append(literal)
        size += length + 1
    if chunk:
        yield plan.prefix + ",".join(chunk) + plan.suffix
