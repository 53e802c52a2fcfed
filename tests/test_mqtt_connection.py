"""The MQTT connection object says what it is doing when the broker is not there."""

from __future__ import annotations

import collections
import logging
import random
import time

import pytest

from earwitness.shared.config import MqttSettings
from earwitness.shared.mqtt import MqttConnection, reconnect_delay
from tests.services import MQTT_HOST, MQTT_PORT, free_port, require, unique


def test_unreachable_broker_is_logged_with_target_and_next_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens here
    conn = MqttConnection(
        MqttSettings(host="127.0.0.1", port=port, reconnect_min_s=1, reconnect_max_s=4),
        unique("c"),
    )
    with caplog.at_level(logging.WARNING, logger="earwitness.shared.mqtt"):
        conn.start()
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(caplog.records) < 2:
                time.sleep(0.1)
        finally:
            conn.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2, lines
    assert f"cannot reach 127.0.0.1:{port} (attempt 1)" in lines[0]
    assert "next try in about" in lines[0] and "(attempt 2)" in lines[1]


def test_reconnect_delays_are_jittered_within_a_doubling_cap() -> None:
    """A fleet that lost its broker together must not knock again together: paho's own
    doubling (1, 2, 4 ... s) is the same for every device; ours spreads each attempt."""
    rng = random.Random(3)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (5, 30.0), (40, 30.0)]:
        delays = [reconnect_delay(attempt, 0.5, 30.0, rng) for _ in range(10_000)]
        assert min(delays) >= 0.5 and max(delays) <= cap
        # spread over the whole range: no second of it holds more than its share
        assert max(delays) - min(delays) > 0.9 * (cap - 0.5)
        if cap >= 4:
            per_second = collections.Counter(int(d) for d in delays)
            assert max(per_second.values()) < 2.5 * 10_000 / (cap - 0.5)


def test_the_wait_paho_takes_is_the_jittered_one() -> None:
    port = free_port()
    conn = MqttConnection(
        MqttSettings(host="127.0.0.1", port=port, reconnect_min_s=0.5, reconnect_max_s=30),
        unique("c"),
    )
    waits = set()
    for _ in range(20):
        conn._schedule_retry()
        # min == max: paho's next wait is exactly the delay we chose and report
        assert conn.client._reconnect_min_delay == conn.client._reconnect_max_delay
        assert conn.client._reconnect_min_delay == conn.next_retry_s()
        waits.add(conn.next_retry_s())
    assert len(waits) > 10 and all(0.5 <= w <= 1.0 for w in waits)


def test_reachable_broker_logs_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    require(MQTT_HOST, MQTT_PORT, "Mosquitto")
    conn = MqttConnection(MqttSettings(host=MQTT_HOST, port=MQTT_PORT), unique("c"))
    with caplog.at_level(logging.WARNING, logger="earwitness.shared.mqtt"):
        conn.start()
        try:
            assert conn.wait_connected(10)
        finally:
            conn.stop()
    assert not caplog.records
