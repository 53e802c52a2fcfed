from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from earwitness.cloud.db import migrate, partitions
from earwitness.cloud.db.engine import make_engine
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
ALERT_TABLES = {"alerts", "alert_evidence", "notifications", "alert_cursors"}


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
    assert {
        "ix_inferences_device_time",
        "ix_inferences_label_time",
        "ix_inferences_time_spot",
        "ix_inferences_device_group_time",
    } <= idx
    assert "ix_inferences_time" not in idx  # 0010: a prefix of the covering index
    columns = {c["name"] for c in inspect(engine).get_columns("inferences")}
    assert {"custom_label", "custom_score"} <= columns and "ix_inferences_custom_time" in idx
    assert "head_artifacts" in inspect(engine).get_table_names()
    with engine.connect() as conn:
        parts = partitions.list_partitions(conn)
    if engine.dialect.name == "mysql":  # monthly, this month and three ahead, then pmax
        assert len(parts) == 1 + partitions.MONTHS_AHEAD + 1 and parts[-1].name == "pmax"
    else:
        assert parts == []
    assert "alert_rules" in inspect(engine).get_table_names()
    migrate.downgrade(engine, "-1")  # 0011: alert rules made through the API
    assert "alert_rules" not in inspect(engine).get_table_names()
    migrate.downgrade(engine, "-1")  # 0010: the time index back to window_start alone
    idx = {i["name"] for i in inspect(engine).get_indexes("inferences")}
    assert "ix_inferences_time" in idx and "ix_inferences_time_spot" not in idx
    migrate.downgrade(engine, "-1")  # 0009: partitions
    with engine.connect() as conn:
        assert partitions.list_partitions(conn) == []
    migrate.downgrade(engine, "-1")  # 0008: head_artifacts
    assert "head_artifacts" not in inspect(engine).get_table_names()
    assert {"heads", "pinned"} <= {c["name"] for c in inspect(engine).get_columns("devices")}
    migrate.downgrade(engine, "-1")  # 0007: devices.heads, devices.pinned
    assert not {"heads", "pinned"} & {c["name"] for c in inspect(engine).get_columns("devices")}
    assert set(inspect(engine).get_table_names()) >= ALERT_TABLES
    migrate.downgrade(engine, "-1")  # 0006: the alert tables
    assert not ALERT_TABLES & set(inspect(engine).get_table_names())
    migrate.downgrade(engine, "-1")  # 0005: custom columns and index; the view survives
    columns = {c["name"] for c in inspect(engine).get_columns("inferences")}
    assert not {"custom_label", "custom_score"} & columns
    assert "audio_ingestion" in inspect(engine).get_view_names()
    migrate.downgrade(engine, "-1")  # 0004: pending_seqs runs back to single seqs
    assert "seq_end" not in {c["name"] for c in inspect(engine).get_columns("pending_seqs")}
    migrate.downgrade(engine, "-1")  # 0003: the index only
    idx = {i["name"] for i in inspect(engine).get_indexes("inferences")}
    assert "ix_inferences_device_group_time" not in idx and "ix_inferences_time" in idx
    assert set(inspect(engine).get_table_names()) >= INGEST_TABLES | LATER_TABLES
    migrate.downgrade(engine, "-1")  # 0002
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


def _runs_survive_a_downgrade(url: str) -> None:
    engine = make_engine(url)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO pending_seqs (device_id, epoch, seq, seq_end) VALUES (:d, :e, :s, :x)"
            ),
            [
                {"d": "dev", "e": "epoch0001", "s": 5, "x": 9},
                {"d": "dev", "e": "epoch0001", "s": 8, "x": 11},  # overlapping runs
                {"d": "dev", "e": "epoch0001", "s": 20, "x": 20},
            ],
        )
    migrate.downgrade(engine, "0003")
    with engine.connect() as conn:
        seqs = conn.execute(text("SELECT seq FROM pending_seqs ORDER BY seq")).scalars().all()
    assert seqs == [5, 6, 7, 8, 9, 10, 11, 20]
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT COUNT(*) FROM pending_seqs WHERE seq_end = seq")).scalar()
            == 8
        )
    migrate.downgrade(engine, "base")
    engine.dispose()


def test_pending_runs_survive_a_downgrade_sqlite(tmp_path: Path) -> None:
    _runs_survive_a_downgrade(f"sqlite:///{tmp_path / 'r.db'}")


@pytest.mark.mariadb
def test_pending_runs_survive_a_downgrade_mariadb() -> None:
    with mariadb_database() as url:
        _runs_survive_a_downgrade(url)


def _schema_drift(url: str) -> list[object]:
    """What autogenerate would change: models and migrations must describe one schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from earwitness.cloud.db.models import Base

    engine = make_engine(url)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()

    def float_vs_double(change: object) -> bool:  # Float(53) is DOUBLE on MySQL: same type
        return (
            isinstance(change, list)
            and change[0][0] == "modify_type"
            and {type(change[0][5]).__name__, type(change[0][6]).__name__} == {"DOUBLE", "Float"}
        )

    def partition_keys(change: object) -> bool:
        """Partitioned inferences (MySQL, cloud/db/partitions.py): its unique key includes
        window_start, as partitioning requires, where the model says message_id."""
        if not (isinstance(change, tuple) and change[0] in ("remove_index", "add_constraint")):
            return False
        target = change[1]
        table = getattr(target, "table", None)
        return (
            getattr(table, "name", None) == partitions.TABLE
            and {c.name for c in target.columns} <= {"message_id", "window_start"}
            and engine.dialect.name == "mysql"
        )

    return [c for c in diff if not float_vs_double(c) and not partition_keys(c)]


def test_models_match_migrations_sqlite(tmp_path: Path) -> None:
    assert _schema_drift(f"sqlite:///{tmp_path / 'd.db'}") == []


@pytest.mark.mariadb
def test_models_match_migrations_mariadb() -> None:
    with mariadb_database() as url:
        assert _schema_drift(url) == []
