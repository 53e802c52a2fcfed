"""The MQTT connection object says what it is doing when the broker is not there."""

from __future__ import annotations

import logging
import time

import pytest

from earwitness.shared.config import MqttSettings
from earwitness.shared.mqtt import MqttConnection
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
