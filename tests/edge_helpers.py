"""Run the real edge agent (real model, real broker) inside tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from earwitness.edge.agent import EdgeAgent
from earwitness.edge.config import EdgeSettings
from earwitness.shared.audio import SAMPLE_RATE, Waveform
from earwitness.shared.signing import public_key_text, sign
from tests.conftest import MODELS
from tests.services import MQTT_HOST, MQTT_PORT, require, unique

# The operator's signing key in tests; every test device trusts its public half.
CONFIG_KEY = Ed25519PrivateKey.generate()


def signed_config(
    site: str,
    device: str,
    version: int,
    runtime: dict[str, Any],
    key: Ed25519PrivateKey = CONFIG_KEY,
) -> bytes:
    return sign(key, site, device, version, runtime)


def edge_config(
    tmp_path: Path, site: str, device: str = "dev1", port: int = MQTT_PORT, **sections: Any
) -> EdgeSettings:
    data: dict[str, Any] = {
        "device": {"id": device, "site": site, "lat": 48.2082, "lon": 16.3738},
        "source": {"kind": "file", "path": str(tmp_path), "realtime": False},
        "model": {"dir": str(MODELS)},
        "mqtt": {"host": MQTT_HOST, "port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 1},
        "outbox": {
            "path": str(tmp_path / f"{device}-outbox.db"),
            "ack_timeout_s": 2.0,
            "drain_rate": 0,
        },
        "health": {"port": 0},
        "remote_config": {"public_keys": [public_key_text(CONFIG_KEY.public_key())]},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return EdgeSettings(**data)


class ArraySource:
    """Feeds a waveform in 100 ms chunks at ``speed`` x real time (0: as fast as possible)."""

    def __init__(self, wave: Waveform, speed: float = 0.0, chunk: int = 1600) -> None:
        self.wave = wave
        self.speed = speed
        self.chunk = chunk
        self.name = "array"
        self.live = speed > 0
        self.finished_at: float | None = None

    def chunks(self, stop: threading.Event) -> Iterator[Waveform]:
        t0 = time.monotonic()
        for i, start in enumerate(range(0, self.wave.size, self.chunk)):
            if stop.is_set():
                break
            if self.speed:
                due = t0 + i * self.chunk / SAMPLE_RATE / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield self.wave[start : start + self.chunk]
        self.finished_at = time.monotonic() - t0


class Collector:
    """Subscribes to a site's device topics and keeps every payload, by kind."""

    def __init__(self, site: str, port: int = MQTT_PORT) -> None:
        require(MQTT_HOST, port, "Mosquitto")
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=unique("col"), protocol=paho.MQTTv5
        )
        self.client.on_message = self._on
        self.client.connect(MQTT_HOST, port)
        self.client.subscribe(f"earwitness/v1/{site}/+/+", qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def _on(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def of_kind(self, kind: str) -> list[tuple[str, bytes]]:
        with self._lock:
            return [(t, p) for t, p in self.messages if t.endswith("/" + kind) and p]

    def statuses(self) -> list[dict[str, Any]]:
        return [json.loads(p) for _t, p in self.of_kind("status")]

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def run_until_finished(agent: EdgeAgent, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not agent.finished:
        assert time.monotonic() < deadline, "agent did not finish its source"
        time.sleep(0.05)


def noise(seconds: float, level: float = 0.01, seed: int = 0) -> Waveform:
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
