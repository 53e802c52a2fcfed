"""The system of record replicated: a three-node MariaDB Galera cluster behind HAProxy
(tests/galera.py). Migrations apply, ingest stores a stream exactly once while the node it
writes to is SIGKILLed and rejoins, and the rows are on every node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import func, select

from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import current, upgrade
from earwitness.cloud.db.models import Inference
from tests.factories import Device as Dev
from tests.galera import GaleraCluster, missing_tools
from tests.ingest_helpers import (
    Publisher,
    ingest_settings,
    running_ingest,
    stream_inferences,
    wait_for,
)
from tests.services import unique

MESSAGES = 3000


@pytest.fixture(scope="module")
def cluster() -> Iterator[GaleraCluster]:
    missing = missing_tools()
    if missing:
        pytest.fail(
            f"Galera tests need {', '.join(missing)} (apt-get install galera-4 haproxy rsync)"
        )
    c = GaleraCluster()
    try:
        c.start()
        yield c
    finally:
        c.cleanup()


def _rows_on(cluster: GaleraCluster, node: int, database: str) -> tuple[int, int]:
    conn = pymysql.connect(host="127.0.0.1", port=cluster.sql_ports[node], user="root",
                           database=database)  # fmt: skip
    with conn.cursor() as cur:
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM inferences")
        rows, seqs = cur.fetchone()
    conn.close()
    return int(rows), int(seqs)


def test_ingest_on_galera_loses_nothing_when_its_node_dies(
    cluster: GaleraCluster, tmp_path: Path
) -> None:
    assert cluster.cluster_size() == 3
    database = unique("ew_galera")
    admin = pymysql.connect(host="127.0.0.1", port=cluster.port, user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    admin.close()
    url = cluster.url(database)
    engine = make_engine(url)
    upgrade(engine)  # every table has a primary key: Galera replicates nothing else well
    assert current(engine) is not None
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    pub.watch_acks(site)

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Inference)).scalar_one())

    with running_ingest(ingest_settings(url, site), tmp_path / "clips"):
        sender, done = stream_inferences(pub, dev, range(MESSAGES), pause_s=0.1)
        wait_for(lambda: count() > 300, timeout=60, what="stream under way")
        cluster.kill(0)  # the node HAProxy sends every connection to
        time.sleep(3)
        cluster.start_node(0)  # rejoins by state transfer; new connections return to it
        sender.join(120)
        assert done.is_set()
        wait_for(
            lambda: pub.ack_seq(f"earwitness/v1/{site}/dev1/ack") == MESSAGES - 1,
            timeout=120,
            what="every message acknowledged",
        )
    assert cluster.cluster_size() == 3
    for node in range(3):  # replicated: the same rows everywhere, each once
        assert _rows_on(cluster, node, database) == (MESSAGES, MESSAGES), node
    pub.close()
    engine.dispose()
