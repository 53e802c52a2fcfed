"""Resending is paced by acknowledgement progress: a window of unacknowledged rows, and
overdue rows sent again with a doubling wait, only while acks have stopped moving."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from earwitness.edge.outbox import Outbox
from earwitness.edge.publisher import ACK_WINDOW, Publisher
from earwitness.shared.config import MqttSettings
from earwitness.shared.messages import AckMessage, StatusMessage
from earwitness.shared.topics import Kind
from tests.edge_helpers import Collector
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


def test_backlog_waits_for_acks_instead_of_flooding(tmp_path: Path) -> None:
    require(MQTT_HOST, MQTT_PORT, "Mosquitto")
    site = unique("s")
    dev = Device(site, "d1")
    box = Outbox(tmp_path / "o.db", 2**30, 86400)
    n = 3 * ACK_WINDOW
    for _ in range(n):
        box.append("inference", dev.topic(Kind.INFERENCE), lambda seq: wire(dev.inference(seq)))
    collector = Collector(site)  # sees the rows on the broker, and sends the acks

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

    def ack(seq: int) -> None:
        body = AckMessage(epoch=box.epoch, seq=seq, ts=datetime.now(UTC)).model_dump_json()
        collector.publish(f"earwitness/v1/{site}/d1/ack", body.encode())

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
        while not collector.of_kind("inference") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.of_kind("inference")  # they did reach the broker
    finally:
        pub.stop(0)
        collector.close()
        box.close()
