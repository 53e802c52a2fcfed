"""The system of record replicated: a three-node MariaDB Galera cluster behind HAProxy
(tests/galera.py). Migrations apply, ingest stores a stream exactly once while the node it
writes to is SIGKILLed and rejoins, and the rows are on every node."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import Engine, func, select

from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import current, upgrade
from earwitness.cloud.db.models import Inference
from earwitness.shared.topics import Kind
from tests.factories import T0
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


def _migrated_database(cluster: GaleraCluster, prefix: str) -> tuple[str, Engine]:
    """A new database on the cluster (through HAProxy), migrated to head."""
    database = unique(prefix)
    admin = pymysql.connect(host="127.0.0.1", port=cluster.port, user="root", autocommit=True)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE {database}")
    admin.close()
    engine = make_engine(cluster.url(database))
    upgrade(engine)
    return database, engine


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
    # every table has a primary key: Galera replicates nothing else well
    database, engine = _migrated_database(cluster, "ew_galera")
    url = cluster.url(database)
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


def _node_url(cluster: GaleraCluster, node: int, database: str) -> str:
    return f"mysql+pymysql://root@127.0.0.1:{cluster.sql_ports[node]}/{database}"


def test_second_opinion_workers_on_two_nodes_score_each_clip_once(
    cluster: GaleraCluster, tmp_path: Path, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    """Two workers, each connected to a different node (no HAProxy): SKIP LOCKED does not
    see the other node's locks, so both may claim the same clips; Galera aborts one of the
    two commits (certification, error 1213) and that worker must go on, not stop."""
    import threading

    import numpy as np

    from earwitness.cloud.clipstore import FileClipStore
    from earwitness.cloud.db.models import Clip, SecondOpinion
    from earwitness.cloud.secondopinion.backends import YamnetReference
    from earwitness.cloud.secondopinion.worker import Worker
    from tests.conftest import MODELS
    from tests.test_second_opinion import count, store_clips

    database, engine = _migrated_database(cluster, "ew_galera_so")
    rng = np.random.default_rng(1)
    waves = [(0.05 * rng.standard_normal(8000)).astype(np.float32) for _ in range(120)]
    store_clips(engine, tmp_path / "clips", patch_model, class_map, waves)
    engines = [make_engine(_node_url(cluster, node, database)) for node in (0, 1)]
    workers = [
        # One interpreter per worker: a TFLite interpreter is not shared across threads.
        Worker(e, FileClipStore(tmp_path / "clips"), [YamnetReference(MODELS)], name=f"node{i}")
        for i, e in enumerate(engines)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=w.run, args=(stop, 0.2, 20), daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        wait_for(
            lambda: count(engine, Clip, Clip.status == "done") == len(waves),
            timeout=180,
            what="every clip scored",
        )
        assert all(t.is_alive() for t in threads), "a worker stopped on a database error"
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert count(engine, SecondOpinion) == len(waves)  # one opinion per clip: none twice
    with engine.connect() as conn:
        distinct = conn.execute(select(func.count(func.distinct(SecondOpinion.clip_id))))
        assert distinct.scalar_one() == len(waves)
    assert sum(w.processed for w in workers) == len(waves)
    print(f"certification conflicts waited out: {[w.db_retries for w in workers]}")
    for e in [*engines, engine]:
        e.dispose()


def test_claims_on_two_nodes_conflict_and_the_loser_is_told_transiently(
    cluster: GaleraCluster, tmp_path: Path, patch_model, class_map
) -> None:  # type: ignore[no-untyped-def]
    """Why the worker must retry: the same clip claimed in open transactions on two
    nodes (each SKIP LOCKED sees no lock of the other); the second commit fails with a
    certification conflict that cloud/db/errors classifies as transient, and only the
    first claim stands."""
    import numpy as np
    from sqlalchemy.exc import SQLAlchemyError
    from sqlalchemy.orm import Session

    from earwitness.cloud.db.errors import is_transient
    from earwitness.cloud.db.models import Clip
    from earwitness.cloud.db.repo import clips as clip_queue
    from tests.test_second_opinion import count, store_clips

    database, engine = _migrated_database(cluster, "ew_galera_claim")
    wave = (0.05 * np.random.default_rng(2).standard_normal(8000)).astype(np.float32)
    store_clips(engine, tmp_path / "clips", patch_model, class_map, [wave])
    engines = [make_engine(_node_url(cluster, node, database)) for node in (0, 1)]
    wait_for(lambda: count(engines[1], Clip) == 1, timeout=30, what="the clip on node 1")
    first, second = Session(engines[0]), Session(engines[1])
    try:
        claimed_a = clip_queue.claim(first, "a", 60)
        claimed_b = clip_queue.claim(second, "b", 60)
        assert claimed_a and claimed_b and claimed_a[0].id == claimed_b[0].id
        first.commit()
        with pytest.raises(SQLAlchemyError) as failure:
            second.commit()
        assert is_transient(failure.value), failure.value
    finally:
        first.close()
        second.close()
    with Session(engine) as session:
        clip = session.scalars(select(Clip)).one()
        assert (clip.status, clip.worker, clip.attempts) == ("claimed", "a", 1)
    for e in [*engines, engine]:
        e.dispose()


def test_alert_replicas_on_two_nodes_make_each_alert_once_and_the_web_shows_them(
    cluster: GaleraCluster, tmp_path: Path
) -> None:
    """Two alert services, each on its own node, decide the same alerts at the same time.
    Their inserts of one fingerprint conflict across nodes (Galera aborts one commit with
    1213 instead of waiting on a lock); the loser must rebuild from what the cluster holds,
    not drop the alert or make a second one. Then the web app, through HAProxy, lists
    them and draws them on the map."""
    from earwitness.cloud.alerts.service import AlertService
    from earwitness.cloud.db.models import Alert, AlertEvidence, Notification
    from earwitness.cloud.settings import CloudSettings
    from earwitness.cloud.web.auth import create_token
    from tests.alert_helpers import WebhookReceiver, alert_settings
    from tests.test_alerts import M_PER_DEG_LAT, event
    from tests.web_helpers import client, web_settings

    pairs = 20
    database, engine = _migrated_database(cluster, "ew_galera_alerts")
    site = unique("s")
    webhook = WebhookReceiver()
    webhook.start()
    replicas = [
        AlertService(
            CloudSettings(
                database_url=_node_url(cluster, node, database),
                alerts=alert_settings(webhook, None, mqtt=False),
            ),
            make_engine(_node_url(cluster, node, database)),
        )
        for node in (0, 1)
    ]
    pub = Publisher()
    # 20 km apart: each device's glass and scream are one alert of their own.
    devices = [
        Dev(site, f"dev{i}", location=(48.2 + i * 20_000 / M_PER_DEG_LAT, 16.37))
        for i in range(pairs)
    ]

    def count(model: object) -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(model)).scalar_one())

    try:
        with running_ingest(ingest_settings(cluster.url(database), site), tmp_path / "clips"):
            for r in replicas:
                r.start()
            for i, dev in enumerate(devices):
                pub.publish(dev.topic(Kind.EVENT), event(dev, 0, "glass_break", i * 0.1))
                pub.publish(dev.topic(Kind.EVENT), event(dev, 1, "scream", i * 0.1 + 2))
            wait_for(lambda: count(Alert) == pairs, timeout=60, what="every alert made")
            wait_for(lambda: len(webhook.requests) >= pairs, timeout=60, what="every webhook")
            time.sleep(2.0)  # room for a duplicate
            assert all(r.health().ok for r in replicas), [r.health() for r in replicas]
    finally:
        for r in replicas:
            r.stop()
            r.engine.dispose()
        webhook.stop()
        pub.close()
    assert count(Alert) == pairs and count(AlertEvidence) == 2 * pairs
    assert count(Notification) == pairs and len(webhook.requests) == pairs
    assert webhook.signatures_valid()
    print(f"decisions per replica: {[r.decisions for r in replicas]}")

    settings = web_settings(cluster.url(database), tmp_path / "clips")
    web = client(settings, engine)
    web.headers["Authorization"] = f"Bearer {create_token(engine, 'galera-read', 'read')}"
    around = {
        "start": (T0 - timedelta(hours=1)).isoformat(),
        "end": (T0 + timedelta(hours=1)).isoformat(),
    }
    listed = web.get("/api/v1/alerts", params={**around, "limit": 100})
    assert listed.status_code == 200, listed.text
    assert len(listed.json()) == pairs and {a["rule"] for a in listed.json()} == {"distress"}
    drawn = web.get("/map/data", params=around)
    assert drawn.status_code == 200, drawn.text
    assert len(drawn.json()["alerts"]) == pairs
    engine.dispose()
