"""Which database errors are worth retrying and which say the data is bad.

Ingest retries transient faults (the connection went away, a deadlock, a lock wait, a
full disk, a Galera node that is not ready) and holds the batch while they last. A message
whose *data* the database refuses (a value out of range, a string too long, a float that
is not finite) would fail the same way forever, so it is dead-lettered with the
database's reason and the rest of the batch goes on. Anything else (a missing table, a
permission) is neither: it needs an operator, and ingest holds the batch and says so.
"""

from __future__ import annotations

import enum

from sqlalchemy import exc as sa_exc


class Fault(enum.Enum):
    TRANSIENT = "transient"  # retry the same batch later
    DATA = "data"  # this message can never be stored: dead-letter it
    OPERATOR = "operator"  # configuration or schema: hold and report


# MySQL/MariaDB error numbers (https://mariadb.com/kb/en/mariadb-error-codes/).
_TRANSIENT_CODES = {
    1021,  # disk full
    1040,  # too many connections
    1047,  # WSREP has not yet prepared node for application use (Galera)
    1053,  # server shutdown in progress
    1114,  # table is full
    1180,  # got error during COMMIT
    1205,  # lock wait timeout
    1213,  # deadlock (also Galera certification failures)
    1290,  # running with --read-only (a replica that is being promoted)
    1317,  # query execution was interrupted (KILL QUERY)
    1927,  # connection was killed
    2002,  # can't connect through socket
    2003,  # can't connect to server
    2006,  # server has gone away
    2013,  # lost connection during query
    2014,  # commands out of sync (a broken connection)
    4031,  # disconnected by the server because of inactivity
}
_DATA_CODES = {
    1048,  # column cannot be null
    1062,  # duplicate entry (a unique key other than the idempotency key)
    1264,  # out of range value
    1265,  # data truncated
    1292,  # truncated incorrect value
    1366,  # incorrect value (string, integer, decimal)
    1406,  # data too long for column
    1452,  # foreign key constraint fails
    3140,  # invalid JSON text
    4025,  # CHECK constraint failed
}
_SQLITE_TRANSIENT = ("database is locked", "database table is locked", "disk i/o error")


def _mysql_code(exc: sa_exc.DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def classify(exc: BaseException) -> Fault:
    """What a failed write means for the batch that caused it."""
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return Fault.TRANSIENT
        code = _mysql_code(exc)
        if code in _TRANSIENT_CODES:
            return Fault.TRANSIENT
        if code in _DATA_CODES:
            return Fault.DATA
        text = str(exc.orig).lower()
        if "can not be used with mysql" in text:  # PyMySQL refusing inf / nan
            return Fault.DATA
        if isinstance(exc, sa_exc.DataError | sa_exc.IntegrityError):
            return Fault.DATA
        if any(s in text for s in _SQLITE_TRANSIENT):
            return Fault.TRANSIENT
        if isinstance(exc, sa_exc.InterfaceError | sa_exc.DisconnectionError):
            return Fault.TRANSIENT
        if isinstance(exc, sa_exc.OperationalError) and code is None:
            return Fault.TRANSIENT  # no server answer to read: the connection failed
        return Fault.OPERATOR
    if isinstance(exc, sa_exc.DisconnectionError):
        return Fault.TRANSIENT
    if isinstance(exc, sa_exc.StatementError) and isinstance(
        exc.orig, ValueError | OverflowError | TypeError
    ):
        return Fault.DATA  # the driver could not even bind the value (SQLite int > 2**63)
    if isinstance(exc, ValueError | OverflowError | TypeError):
        return Fault.DATA
    return Fault.OPERATOR


def is_transient(exc: BaseException) -> bool:
    return classify(exc) is Fault.TRANSIENT


def reason(exc: BaseException) -> str:
    """The database's own words, one line, for the dead-letter row."""
    orig = getattr(exc, "orig", None) or exc
    return f"database refused the data: {type(orig).__name__}: {str(orig).splitlines()[0][:500]}"
