"""Engines and sessions for MySQL/MariaDB (PyMySQL) and SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000  # ingest and web share the file in the demo


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings every service wants: pre-ping, UTC, WAL on SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.close()

        return engine
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        parsed = parsed.set(query=query)
        engine = create_engine(parsed, pool_pre_ping=True, pool_recycle=3600, future=True, **kwargs)

        @event.listens_for(engine, "do_connect")
        def _affected_not_found_rows(
            dialect: Any, conn_rec: Any, cargs: Any, cparams: dict[str, Any]
        ) -> None:
            # SQLAlchemy asks for FOUND_ROWS; without it, "INSERT ... ON DUPLICATE KEY
            # UPDATE k = k" reports 0 for a duplicate, which is how ingest counts them.
            from pymysql.constants import CLIENT

            cparams["client_flag"] = cparams.get("client_flag", 0) & ~CLIENT.FOUND_ROWS

        @event.listens_for(engine, "connect")
        def _mysql_utc(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("SET time_zone = '+00:00'")
            cur.close()

        return engine
    return create_engine(parsed, pool_pre_ping=True, **kwargs)


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """The one way to talk to the database: a session in a transaction that commits on
    success and rolls back on any exception. Objects stay readable after it closes
    (``expire_on_commit=False``), so callers can use what a repository returned."""
    with Session(engine, expire_on_commit=False) as session, session.begin():
        yield session


def ping(engine: Engine) -> None:
    """Raise if the database cannot be reached (health checks)."""
    with transaction(engine) as session:
        session.execute(text("SELECT 1"))
