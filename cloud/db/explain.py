"""Database errors an operator can act on: one or two lines, the URL without its
password, and what to do. The CLI prints these instead of a traceback (``-v`` keeps it)."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

# MySQL / MariaDB client error numbers (pymysql passes them through).
UNKNOWN_DATABASE = 1049
ACCESS_DENIED = 1045
CANNOT_CONNECT = 2003
UNKNOWN_HOST = 2005
LOST_CONNECTION = 2013


def _safe(url: str | None) -> str:
    if not url:
        return "the database"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "the database URL"


def explain(exc: BaseException, url: str | None = None) -> str | None:
    """A short message for a database error, or None when it is not one we know."""
    where = _safe(url)
    if isinstance(exc, ArgumentError) and "parse" in str(exc):
        return (
            f"database URL {url!r} cannot be parsed\n"
            "  use e.g. mysql+pymysql://USER:PASSWORD@HOST:3306/DB or sqlite:///var/earwitness.db"
        )
    if isinstance(exc, ModuleNotFoundError) and exc.name in ("MySQLdb", "mysqlclient"):
        return (
            f"{where}: mysql:// needs the MySQLdb driver, which is not installed\n"
            "  use mysql+pymysql://... (PyMySQL is installed with earwitness[cloud])"
        )
    if isinstance(exc, ModuleNotFoundError | NoSuchModuleError):
        return (
            f"{where}: no driver for this database ({exc})\n"
            "  supported: mysql+pymysql:// (MySQL, MariaDB) and sqlite:///"
        )
    if isinstance(exc, DBAPIError) and exc.orig is not None and exc.orig.args:
        code = exc.orig.args[0]
        text = str(exc.orig.args[1]) if len(exc.orig.args) > 1 else str(exc.orig)
        hints = {
            UNKNOWN_DATABASE: "create it first (CREATE DATABASE ...) or fix the name in the URL",
            ACCESS_DENIED: "check the user and password (database_password_file, the URL)",
            CANNOT_CONNECT: "is the server running and listening on that host and port?",
            UNKNOWN_HOST: "check the host name in the URL",
            LOST_CONNECTION: "the server closed the connection; check its log",
        }
        if code in hints:
            return f"{where}: {text}\n  {hints[code]}"
    if isinstance(exc, DBAPIError) and "unable to open database file" in str(exc):
        return (
            f"{where}: cannot open the SQLite file\n  does its directory exist and is it writable?"
        )
    return None
