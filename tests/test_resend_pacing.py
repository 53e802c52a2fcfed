"""Resending is paced by acknowledgement progress: a window of unacknowledged rows, and
overdue rows sent again with a doubling wait, only while acks have stopped moving."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from earwitness.edge.outbox import Outbox
from earwitness.edge.publisher import ACK_WINDOW, Publisher
from earwitness.shared.config import MqttSettings
from earwitness.shared.messages import AckMessage, StatusMessage
from earwitness.shared.topics import Kind
from tests.factories import Device, wire
from tests.services import MQTT_HOST, MQTT_PORT, require, unique


def test_overdue_waits_double_with_each_attempt(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 2**20, 3600)
    box.append("inference", "t", lambda seq: b"x")
    box.mark_sent([0])  # attempt 1
    assert box.overdue(10, 0.5) == []
    time.sleep(0.6)
    assert [r.seq for r in box.overdue(10, 0.5)] == [0]
    box.mark_sent([0])  # attempt 2: the next wait is 1 s
    time.sleep(0.6)
    assert box.overdue(10, 0.5) == []
    time.sleep(0.6)
    assert [r.seq for r in box.overdue(10, 0.5)] == [0]
    box.close()


class _Counter:
    def __init__(self, site: str) -> None:
        self.seqs: list[int] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("cnt"))
        self.client.on_message = self._on
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.subscribe(f"earwitness/v1/{site}/+/inference", qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        import json

        with self._lock:
            self.seqs.append(int(json.loads(msg.payload)["seq"]))

    def count(self) -> int:
        with self._lock:
            return len(self.seqs)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_backlog_waits_for_acks_instead_of_flooding(tmp_path: Path) -> None:
    require(MQTT_HOST, MQTT_PORT, "Mosquitto")
    site = unique("s")
    dev = Device(site, "d1")
    box = Outbox(tmp_path / "o.db", 2**30, 86400)
    n = 3 * ACK_WINDOW
    for _ in range(n):
        box.append("inference", dev.topic(Kind.INFERENCE), lambda seq: wire(dev.inference(seq)))
    counter = _Counter(site)

    def status(state: str) -> StatusMessage:
        return StatusMessage(
            id=uuid.uuid4().hex, site=site, device="d1", ts=datetime.now(UTC), state=state
        )  # type: ignore[arg-type]

    pub = Publisher(
        MqttSettings(host=MQTT_HOST, port=MQTT_PORT),
        box,
        site,
        "d1",
        status,  # type: ignore[arg-type]
        ack_timeout_s=600,
        drain_rate=0,  # no rate limit: only the window holds the backlog back
        on_config=lambda b: None,
    )
    acker = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("ack"))
    acker.connect(MQTT_HOST, MQTT_PORT)
    acker.loop_start()

    def ack(seq: int) -> None:
        body = AckMessage(epoch=box.epoch, seq=seq, ts=datetime.now(UTC)).model_dump_json()
        acker.publish(f"earwitness/v1/{site}/d1/ack", body.encode(), qos=1).wait_for_publish(5)

    def settle(expected: int) -> int:
        """Rows handed to MQTT (a subscriber could not count them: the broker drops
        QoS 1 messages beyond a slow subscriber's queue)."""
        deadline = time.monotonic() + 15
        while pub.sent < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # room for anything beyond the window to show up
        return pub.sent

    pub.start()
    try:
        assert settle(ACK_WINDOW) == ACK_WINDOW  # then nothing until an ack
        ack(ACK_WINDOW - 1)
        assert settle(2 * ACK_WINDOW) == 2 * ACK_WINDOW
        ack(2 * ACK_WINDOW - 1)
        assert settle(n) == n  # each row sent once: nothing was resent
        assert box.sent_upto == n - 1
        deadline = time.monotonic() + 10
        while counter.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counter.count() > 0  # they did reach the broker
    finally:
        pub.stop(0)
        acker.loop_stop()
        acker.disconnect()
        counter.close()
        box.close()
