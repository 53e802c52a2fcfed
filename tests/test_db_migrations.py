from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from cloud.db import migrate
from cloud.db.engine import make_engine
from tests.services import mariadb_database

INGEST_TABLES = {
    "devices",
    "inferences",
    "events",
    "clips",
    "heartbeats",
    "dead_letters",
    "ack_watermarks",
    "pending_seqs",
}
LATER_TABLES = {"second_opinions", "api_tokens", "reviews"}


def _check_up_and_down(url: str) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    tables = set(inspect(engine).get_table_names())
    assert tables >= INGEST_TABLES | LATER_TABLES
    with engine.connect() as conn:
        cols = list(conn.execute(text("SELECT * FROM audio_ingestion")).keys())
    for col in (
        "inference",
        "second_inference",
        "inference_yamnet_time",
        "lat",
        "long",
        "sensor_current_time",
        "datetime",
    ):
        assert col in cols
    idx = {i["name"] for i in inspect(engine).get_indexes("inferences")}
    assert {"ix_inferences_device_time", "ix_inferences_label_time", "ix_inferences_time"} <= idx
    migrate.downgrade(engine, "-1")
    tables = set(inspect(engine).get_table_names())
    assert tables >= INGEST_TABLES
    assert not (LATER_TABLES & tables)
    migrate.upgrade(engine)
    assert migrate.is_current(engine)
    migrate.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_sqlite_upgrade_and_downgrade(tmp_path: Path) -> None:
    _check_up_and_down(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.mariadb
def test_mariadb_upgrade_and_downgrade() -> None:
    with mariadb_database() as url:
        _check_up_and_down(url)


@pytest.mark.mariadb
def test_mariadb_columns_are_utf8mb4_datetime3() -> None:
    with mariadb_database() as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        with engine.connect() as conn:
            ddl = conn.execute(text("SHOW CREATE TABLE inferences")).one()[1]
        assert "datetime(3)" in ddl
        assert "utf8mb4" in ddl
        assert "InnoDB" in ddl
        engine.dispose()
