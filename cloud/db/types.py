"""Every MySQL/MariaDB specific lives here, so models read the same on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, LargeBinary
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

MYSQL_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
    "mariadb_collate": "utf8mb4_unicode_ci",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; MySQL needs BIGINT for billions of rows.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# MEDIUMBLOB on MySQL: a dead letter keeps up to a few KiB of the payload.
Blob = LargeBinary().with_variant(mysql.MEDIUMBLOB(), "mysql", "mariadb")
# Head files may reach shared.heads.MAX_HEAD_BYTES (16 MB): MEDIUMBLOB ends at 16 MiB - 1.
HeadBlob = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

Json = JSON().with_variant(mysql.JSON(), "mysql", "mariadb")


class UtcDateTime(TypeDecorator[datetime]):
    """DATETIME(3) holding UTC. Values go in and come out timezone-aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=3))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None, microsecond=value.microsecond // 1000 * 1000)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)
