"""Ingest end to end: real Mosquitto, real database (SQLite and MariaDB)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from earwitness.cloud.db.models import AckWatermark, Clip, DeadLetter, Device, Inference
from earwitness.cloud.ingest.consumer import ACK_RESYNC_S
from earwitness.shared.topics import Kind
from tests.factories import Device as Dev
from tests.factories import wire
from tests.ingest_helpers import Publisher, ingest_settings, running_ingest, wait_for
from tests.services import unique

pytestmark = pytest.mark.mqtt


def rows(engine, model=Inference) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


@pytest.mark.parametrize("writers", [2, 0], ids=["writer-processes", "one-process"])
def test_stream_is_stored_and_acknowledged(
    db_url: str, engine, tmp_path: Path, writers: int
) -> None:  # type: ignore[no-untyped-def]
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    pub.watch_acks(site)
    settings = ingest_settings(db_url, site, writer_processes=writers)
    with running_ingest(settings, tmp_path / "clips") as svc:
        pub.publish(dev.topic(Kind.STATUS), wire(dev.status("online")))
        pub.publish_many([(dev.topic(Kind.INFERENCE), wire(dev.inference(s))) for s in range(200)])
        pub.publish(dev.topic(Kind.CLIP), wire(dev.clip(200)))
        pub.publish(dev.topic(Kind.HEARTBEAT), wire(dev.heartbeat(201)))
        ack_topic = f"earwitness/v1/{site}/dev1/ack"
        wait_for(lambda: pub.ack_seq(ack_topic) == 201, what="ack watermark 201")
        assert rows(engine) == 200
        assert svc.metrics.total("rows_stored_total") == 202
    with engine.connect() as conn:
        device = conn.execute(select(Device)).one()
        key = conn.execute(select(Clip.storage_key)).scalar_one()
    assert device.id == "dev1" and device.online is True and device.lat == 48.2082
    # In the store the service was given, also when writer processes open their own.
    assert (tmp_path / "clips" / key).read_bytes() == dev.clip(200).audio()
    pub.close()


def test_same_message_twice_and_republished_is_one_row(db_url: str, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    pub.watch_acks(site)
    ack_topic = f"earwitness/v1/{site}/dev1/ack"
    payload = wire(dev.inference(0))
    settings = ingest_settings(db_url, site)
    with running_ingest(settings, tmp_path / "c") as svc:
        pub.publish(dev.topic(Kind.INFERENCE), payload)
        pub.publish(dev.topic(Kind.INFERENCE), payload)
        wait_for(lambda: pub.ack_seq(ack_topic) == 0, what="ack 0")
        wait_for(lambda: svc.metrics.total("duplicates_total") == 1, what="duplicate counted")
    # The device re-sends after an outage, to a restarted consumer (same session).
    with running_ingest(settings, tmp_path / "c") as svc:
        pub.publish(dev.topic(Kind.INFERENCE), payload)
        pub.publish(dev.topic(Kind.INFERENCE), wire(dev.inference(1)))
        wait_for(lambda: pub.ack_seq(ack_topic) == 1, what="ack 1")
        assert svc.metrics.total("duplicates_total") == 1
    assert rows(engine) == 2
    pub.close()


def test_gap_holds_ack_until_filled(db_url: str, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    pub.watch_acks(site)
    ack_topic = f"earwitness/v1/{site}/dev1/ack"
    with running_ingest(ingest_settings(db_url, site), tmp_path / "c"):
        pub.publish_many(
            [(dev.topic(Kind.INFERENCE), wire(dev.inference(s))) for s in (0, 1, 2, 4, 5)]
        )
        wait_for(lambda: pub.ack_seq(ack_topic) == 2, what="ack 2")
        wait_for(lambda: rows(engine) == 5, what="5 rows")
        assert pub.ack_seq(ack_topic) == 2  # 3 is missing: 4 and 5 are stored, not acknowledged
        pub.publish(dev.topic(Kind.INFERENCE), wire(dev.inference(3)))
        wait_for(lambda: pub.ack_seq(ack_topic) == 5, what="ack 5 after the gap is filled")
    pub.close()


def test_dead_letters_from_the_broker(db_url: str, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    with running_ingest(ingest_settings(db_url, site), tmp_path / "c"):
        pub.publish(dev.topic(Kind.INFERENCE), b"\xff\xfe not json")
        pub.publish(f"earwitness/v1/{site}/dev1/bogus", b"{}")
        pub.publish(f"earwitness/v1/{site}/dev1/ack", b'{"seq": 1}')  # downlink: ignored
        pub.publish(dev.topic(Kind.INFERENCE), wire(dev.inference(0)))
        wait_for(lambda: rows(engine) == 1 and rows(engine, DeadLetter) == 2, what="rows")
    with engine.connect() as conn:
        errors = sorted(conn.execute(select(DeadLetter.error)).scalars())
    assert errors[0].startswith("bad JSON")
    assert "unknown message kind 'bogus'" in errors[1]
    pub.close()


def test_downlink_and_alert_messages_stop_at_the_network_thread(
    db_url: str, engine, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Acks and config match ingest's subscription (its own acks too, one per commit;
    alerts when it takes every site); they are acknowledged and counted where they arrive, never stored or
    dead-lettered, and a consumer that comes back on the same session is not handed them
    again (they were acknowledged)."""
    site = unique("s")
    dev = Dev(site, "dev1")
    pub = Publisher()
    settings = ingest_settings(db_url, site)
    with running_ingest(settings, tmp_path / "c") as svc:
        count = svc.metrics.get
        pub.publish(f"earwitness/v1/{site}/dev1/config", b"{}")
        pub.client.publish(f"earwitness/v1/{site}/dev1/ack", b'{"seq": 2}', qos=0)
        pub.publish(dev.topic(Kind.INFERENCE), wire(dev.inference(0)))
        # the inference stored, its ack published, and that ack comes back too
        wait_for(
            lambda: count("messages_total", kind="ack_ignored") == 2,
            what=f"2 acks ignored (counted {count('messages_total', kind='ack_ignored')})",
        )
        assert count("messages_total", kind="config_ignored") == 1
        assert count("messages_total", kind="inference") == 1
        assert rows(engine) == 1
    with running_ingest(settings, tmp_path / "c") as again:
        pub.publish(dev.topic(Kind.INFERENCE), wire(dev.inference(1)))
        wait_for(lambda: rows(engine) == 2, what="the second inference stored")
        time.sleep(0.5)  # anything the broker would hand over again has arrived by now
        assert again.metrics.get("messages_total", kind="config_ignored") == 0
    assert rows(engine, DeadLetter) == 0
    pub.close()


def test_ack_many_acknowledges_exactly_the_given_messages() -> None:
    """One write of concatenated PUBACKs: the broker forgets exactly those messages and
    redelivers the others to the persistent session."""
    import threading
    import time

    from earwitness.shared.config import MqttSettings
    from earwitness.shared.mqtt import MqttConnection
    from tests.services import MQTT_HOST, MQTT_PORT

    topic, client_id = f"earwitness-test/{unique('t')}", unique("acker-")
    settings = MqttSettings(host=MQTT_HOST, port=MQTT_PORT)
    got: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def connection() -> MqttConnection:
        conn = MqttConnection(
            settings, client_id, clean_start=False, session_expiry_s=60, manual_ack=True
        )

        def on_message(msg) -> None:  # type: ignore[no-untyped-def]
            with lock:
                got.append((msg.mid, bytes(msg.payload)))

        conn.on_message = on_message
        conn.on_connect = lambda c: c.subscribe(topic, qos=1)
        conn.start()
        assert conn.wait_connected(10)
        time.sleep(0.5)  # the subscription's round trip
        return conn

    first = connection()
    pub = Publisher()
    # 20: Mosquitto's default max_inflight_messages, the unacknowledged it will send us
    pub.publish_many([(topic, str(i).encode()) for i in range(20)])
    wait_for(lambda: len(got) == 20, what="20 messages delivered")
    with lock:
        acked = [mid for mid, payload in got if int(payload) < 12]
    first.ack_many(acked)
    wait_for(lambda: not first.client._out_packet, what="PUBACKs written")
    first.stop()
    got.clear()
    second = connection()  # same client id, persistent session: the broker redelivers
    wait_for(lambda: len(got) >= 8, what="unacknowledged messages redelivered")
    second.ack_many([mid for mid, _ in got])
    wait_for(lambda: not second.client._out_packet, what="PUBACKs written")
    time.sleep(0.5)  # nothing else arrives
    assert sorted(int(p) for _, p in got) == list(range(12, 20))
    second.stop()
    pub.close()


def test_acks_never_step_back(db_url: str, engine, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Writer processes finish batches in any order; an older watermark arriving after a
    newer one must not be published (it would stay retained). The same value again is:
    it answers a device that re-sent what was already stored."""
    site = unique("s")
    pub = Publisher()
    pub.watch_acks(site)
    topic = f"earwitness/v1/{site}/dev1/ack"
    seen: list[int] = []
    pub.client.message_callback_add(
        topic, lambda c, u, m: seen.append(json.loads(m.payload)["seq"])
    )
    settings = ingest_settings(db_url, site)
    key = (site, "dev1", "epoch0001")
    with running_ingest(settings, tmp_path / "clips") as svc:
        for seq in (10, 5, 10, 12):
            svc._publish_acks({key: seq})
        wait_for(lambda: seen[-1:] == [12], what="ack 12")
        assert seen == [10, 10, 12]
        # Another consumer committed up to 30 and published 30, but this consumer's 12
        # reached the broker after it: the resync publishes the database's value.
        with engine.begin() as conn:
            conn.execute(
                insert(AckWatermark).values(
                    device_id="dev1", epoch="epoch0001", seq=30, updated_at=datetime.now(UTC)
                )
            )
        svc._publish_acks({key: 12})
        wait_for(lambda: seen[-1:] == [30], timeout=3 * ACK_RESYNC_S, what="resynced ack 30")
        assert svc.metrics.total("acks_republished_total") == 1
    assert seen == [10, 10, 12, 12, 30]
    pub.close()
