"""Ingest under failure: malformed floods, killed database connections, a killed consumer,
and two consumers sharing the subscription. Real Mosquitto and MariaDB throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.models import DeadLetter, Inference
from earwitness.shared.topics import Kind
from tests.factories import Device as Dev
from tests.factories import wire
from tests.ingest_helpers import (
    Publisher,
    ingest_settings,
    running_ingest,
    stream_inferences,
    wait_for,
)
from tests.services import (
    MARIADB_HOST,
    MARIADB_PORT,
    MARIADB_USER,
    MQTT_PORT,
    PrivateBroker,
    mariadb_database,
    spawn,
    unique,
)

pytestmark = [pytest.mark.mqtt, pytest.mark.mariadb]

# The conftest's migrated database and its engine, on MariaDB only: these faults need
# MariaDB (KILL, several writers at once).
ON_MARIADB = pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)


def count(engine, model=Inference) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def distinct_seqs(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count(func.distinct(Inference.seq)))).scalar_one())


# -- malformed payloads -----------------------------------------------------------------
_VALID = json.loads(wire(Dev("s", "d").inference(0)))
_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def malformed(draw: st.DrawFn) -> bytes:
    """Payloads that must all be rejected: junk bytes, wrong JSON shapes, and valid
    messages with one field broken, removed or added, or the wrong version."""
    kind = draw(st.sampled_from(["bytes", "text", "json", "field", "drop", "extra", "version"]))
    if kind == "bytes":
        return b"\x80" + draw(st.binary(max_size=200))  # never valid UTF-8 JSON
    if kind == "text":
        return ("{" + draw(st.text(max_size=200))).encode()
    if kind == "json":
        return json.dumps(draw(st.lists(_json_values, max_size=3) | st.integers())).encode()
    msg = dict(_VALID)
    if kind == "field":
        key = draw(st.sampled_from(["window_start", "top", "dbfs", "seq", "epoch", "window_s"]))
        msg[key] = draw(st.sampled_from([None, "x", [], {}, -5, 1e300, "2026-13-45"]))
    elif kind == "drop":
        del msg[draw(st.sampled_from(sorted(k for k in msg if k not in ("v", "kind"))))]
    elif kind == "extra":
        msg[draw(st.text(min_size=1, max_size=10).filter(lambda k: k not in msg))] = 1
    else:
        msg["v"] = draw(st.integers().filter(lambda v: v != 1))
    return json.dumps(msg).encode()


@settings(
    max_examples=1,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.data_too_large,
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.large_base_example,
    ],
)
@given(payloads=st.lists(malformed(), min_size=1000, max_size=1000))
def test_a_thousand_malformed_payloads(payloads: list[bytes], tmp_path: Path) -> None:
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        site = unique("s")
        dev = Dev(site, "dev1", epoch="epochGOOD")
        pub = Publisher()
        items = []
        for i, payload in enumerate(payloads):
            items.append((dev.topic(Kind.INFERENCE), payload))
            if i % 10 == 0:
                items.append((dev.topic(Kind.INFERENCE), wire(dev.inference(i // 10))))
        with running_ingest(ingest_settings(url, site), tmp_path / "c") as svc:
            pub.publish_many(items)
            wait_for(
                lambda: count(engine) == 100 and count(engine, DeadLetter) == 1000,
                timeout=60,
                what="100 rows and 1000 dead letters",
            )
            assert svc.health()[0], "consumer must stay healthy"
        pub.close()
        engine.dispose()


# -- database connections killed mid-batch ------------------------------------------------
def _kill_connections(database: str, stop: threading.Event, killed: list[int]) -> None:
    admin = pymysql.connect(
        host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER, autocommit=True
    )
    try:
        while not stop.is_set():
            with admin.cursor() as cur:
                cur.execute(
                    "SELECT id FROM information_schema.processlist WHERE db = %s", (database,)
                )
                for (conn_id,) in cur.fetchall():
                    try:
                        cur.execute(f"KILL {int(conn_id)}")
                        killed.append(int(conn_id))
                    except pymysql.err.OperationalError:
                        pass  # already gone
            time.sleep(0.05)
    finally:
        admin.close()


@pytest.mark.parametrize("writers", [2, 0], ids=["writer-processes", "one-process"])
@ON_MARIADB
def test_killed_database_connections_lose_nothing(
    db_url: str, engine: Engine, tmp_path: Path, writers: int
) -> None:
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    pub.watch_acks(site)
    n = 0
    stop, killed = threading.Event(), []  # type: ignore[var-annotated]
    settings = ingest_settings(db_url, site, batch_size=200, writer_processes=writers)
    with running_ingest(settings, tmp_path / "c") as svc:
        killer = threading.Thread(
            target=_kill_connections, args=(db_url.rsplit("/", 1)[1], stop, killed)
        )
        killer.start()
        # A KILL between batches is healed by pool_pre_ping without a retry; keep the
        # stream going until a kill has landed inside a batch (on a fast machine
        # batches are short), at least 3,000 messages and at most 60 s.
        deadline = time.monotonic() + 60
        while n < 3000 or (svc.db_retries == 0 and time.monotonic() < deadline):
            pub.publish_many(
                [(dev.topic(Kind.INFERENCE), wire(dev.inference(s))) for s in range(n, n + 300)]
            )
            n += 300
            time.sleep(0.1)
        time.sleep(0.5)
        stop.set()
        killer.join()
        wait_for(
            lambda: pub.ack_seq(f"earwitness/v1/{site}/dev1/ack") == n - 1,
            timeout=60,
            what="every message acknowledged",
        )
        retries = svc.db_retries
    assert killed, "the test must actually kill connections"
    assert retries > 0, "the writer must have retried at least one batch"
    assert count(engine) == n and distinct_seqs(engine) == n
    pub.close()


@ON_MARIADB
def test_killed_writer_process_is_replaced_and_loses_nothing(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """SIGKILL the child that validates and writes, twice, mid-stream: the parent holds
    every unacknowledged batch, starts a new child and stores it again."""
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    pub.watch_acks(site)
    n = 3000
    with running_ingest(ingest_settings(db_url, site, batch_size=100), tmp_path / "c") as svc:
        killed = []
        for start in range(0, n, 300):
            pub.publish_many(
                [
                    (dev.topic(Kind.INFERENCE), wire(dev.inference(s)))
                    for s in range(start, min(n, start + 300))
                ]
            )
            if start in (600, 1800):
                child = svc._children[start // 1200]._proc  # the first, then the second
                os.kill(child.pid, signal.SIGKILL)
                killed.append(child.pid)
            time.sleep(0.1)
        wait_for(
            lambda: pub.ack_seq(f"earwitness/v1/{site}/dev1/ack") == n - 1,
            timeout=60,
            what="every message acknowledged",
        )
        assert not {c._proc.pid for c in svc._children} & set(killed)  # new children
    assert len(killed) == 2
    assert count(engine) == n and distinct_seqs(engine) == n
    pub.close()


# -- consumer killed with SIGKILL ---------------------------------------------------------
def _ingest_process(
    url: str, port: int, site: str, group: str, clips: Path, new_session: bool = False
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EARWITNESS_DATABASE_URL": url,
        "EARWITNESS_MQTT__PORT": str(port),
        "EARWITNESS_INGEST__GROUP": group,
        "EARWITNESS_INGEST__CLIENT_ID": f"ingest-{group}",
        "EARWITNESS_INGEST__SITES": json.dumps([site]),
        "EARWITNESS_INGEST__HEALTH_PORT": "0",
        "EARWITNESS_INGEST__SESSION_EXPIRY_S": "300",
        "EARWITNESS_CLIPS__URL": str(clips),
    }
    return spawn([sys.executable, "-m", "earwitness", "ingest"], env, new_session)


def _wait_until_consuming(pub: Publisher, dev: Dev, engine: Any, proc: Any) -> None:
    """Re-publish seq 0 (idempotent) until the freshly started consumer has stored it."""
    deadline = time.monotonic() + 30
    while count(engine) == 0:
        if proc.poll() is not None:
            raise AssertionError(f"ingest exited: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "ingest never stored a message"
        pub.publish(dev.topic(Kind.INFERENCE), wire(dev.inference(0)))
        time.sleep(0.5)


@ON_MARIADB
def test_sigkilled_consumer_loses_nothing(db_url: str, engine: Engine, tmp_path: Path) -> None:
    broker = PrivateBroker()
    broker.start()
    try:
        site, group = unique("s"), unique("g")
        dev = Dev(site, "dev1")
        proc = _ingest_process(db_url, broker.port, site, group, tmp_path / "c")
        pub = Publisher(port=broker.port)
        pub.watch_acks(site)
        _wait_until_consuming(pub, dev, engine, proc)
        n = 4000
        sender, sender_done = stream_inferences(pub, dev, range(1, n), pause_s=0.05)
        wait_for(lambda: count(engine) > 300, what="stream under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stored_at_kill = count(engine)
        time.sleep(1.0)  # messages keep arriving at the broker while nobody consumes
        proc = _ingest_process(db_url, broker.port, site, group, tmp_path / "c")
        sender.join(60)
        assert sender_done.is_set()
        wait_for(
            lambda: pub.ack_seq(f"earwitness/v1/{site}/dev1/ack") == n - 1,
            timeout=90,
            what="all acknowledged after restart",
        )
        assert stored_at_kill < n
        assert count(engine) == n and distinct_seqs(engine) == n
        proc.terminate()
        proc.wait(10)
        pub.close()
    finally:
        broker.cleanup()


# -- two consumers on one shared subscription -----------------------------------------------
@ON_MARIADB
def test_two_consumers_share_the_load_without_duplicates(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    site = unique("s")
    devices = [Dev(site, f"dev{i}") for i in range(4)]
    base = ingest_settings(db_url, site)
    second: Any = base.model_copy(
        update={"ingest": base.ingest.model_copy(update={"client_id": unique("ingest-")})}
    )
    pub = Publisher()
    with (
        running_ingest(base, tmp_path / "a") as one,
        running_ingest(second, tmp_path / "b") as two,
    ):
        pub.publish_many(
            [(d.topic(Kind.INFERENCE), wire(d.inference(s))) for s in range(1000) for d in devices]
        )
        wait_for(lambda: count(engine) == 4000, timeout=60, what="4000 rows")
        got = lambda svc: svc.metrics.get("messages_total", kind="inference")  # noqa: E731
        wait_for(lambda: got(one) + got(two) == 4000, what="both consumers' counters")
        a, b = got(one), got(two)
        # Each device's messages were split between the consumers, which publish
        # acks independently; the retained ack a reconnecting device gets must be
        # the last seq, not whichever consumer's publish arrived last.
        late = Publisher()
        late.watch_acks(site)
        wait_for(
            lambda: all(
                late.ack_seq(f"earwitness/v1/{site}/{d.device}/ack") == 999 for d in devices
            ),
            timeout=10,
            what="retained acks at seq 999",
        )
        late.close()
    assert a > 0 and b > 0
    assert distinct_seqs(engine) == 1000
    pub.close()


@ON_MARIADB
def test_ctrl_c_to_the_process_group_stops_cleanly(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """Ctrl-C reaches every process of a terminal's foreground job, the writer processes
    too. They must leave stopping to the consumer: no batch cut off, no restart, exit 0,
    and what was not acknowledged comes back to the next consumer."""
    site, group = unique("s"), unique("g")
    dev = Dev(site, "dev1")
    proc = _ingest_process(db_url, MQTT_PORT, site, group, tmp_path / "c", new_session=True)
    pub = Publisher()
    pub.watch_acks(site)
    _wait_until_consuming(pub, dev, engine, proc)
    n = 3000
    for start in range(1, n, 500):
        pub.publish_many(
            [
                (dev.topic(Kind.INFERENCE), wire(dev.inference(s)))
                for s in range(start, min(n, start + 500))
            ]
        )
        if start == 1001:
            os.killpg(proc.pid, signal.SIGINT)
    code = proc.wait(20)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0, stderr[-3000:]
    assert "writer process exited" not in stderr and "Traceback" not in stderr, stderr
    again = _ingest_process(db_url, MQTT_PORT, site, group, tmp_path / "c")
    pub.publish(dev.topic(Kind.INFERENCE), wire(dev.inference(n)))  # for the new one
    wait_for(
        lambda: pub.ack_seq(f"earwitness/v1/{site}/dev1/ack") == n,
        timeout=60,
        what="every message stored after the restart",
    )
    again.send_signal(signal.SIGTERM)
    assert again.wait(20) == 0
    assert count(engine) == n + 1 and distinct_seqs(engine) == n + 1
    pub.close()


@ON_MARIADB
def test_retained_acks_come_back_after_the_broker_loses_them(
    db_url: str, engine: Engine, tmp_path: Path
) -> None:
    """A SIGKILLed broker loses what it had not saved, the retained acks too. An idle
    device would then wait with no ack; ingest publishes them again on reconnect."""
    broker = PrivateBroker()
    broker.start()
    try:
        site = unique("s")
        dev = Dev(site, "dev1")
        ack_topic = f"earwitness/v1/{site}/dev1/ack"
        with running_ingest(ingest_settings(db_url, site, port=broker.port), tmp_path / "c"):
            pub = Publisher(port=broker.port)
            pub.watch_acks(site)
            pub.publish_many(
                [(dev.topic(Kind.INFERENCE), wire(dev.inference(s))) for s in range(5)]
            )
            wait_for(lambda: pub.ack_seq(ack_topic) == 4, what="ack before the kill")
            pub.close()
            broker.kill()
            for saved in broker.dir.glob("*.db"):
                saved.unlink()  # nothing was saved: the retained ack is gone
            broker.start()
            late = Publisher(port=broker.port)  # a device that subscribes after the restart
            late.watch_acks(site)
            wait_for(
                lambda: late.ack_seq(ack_topic) == 4, timeout=30, what="retained ack republished"
            )
            late.close()
        assert count(engine) == 5
    finally:
        broker.cleanup()
