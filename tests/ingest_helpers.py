"""Run the real ingest service against the real broker and database in tests."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from earwitness.cloud.clipstore import ClipStore, FileClipStore
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.ingest.consumer import IngestService
from earwitness.cloud.settings import CloudSettings
from earwitness.shared.topics import Kind
from tests.factories import Device, wire
from tests.services import MQTT_HOST, MQTT_PORT, require, unique


def ingest_settings(db_url: str, site: str, port: int = MQTT_PORT, **ingest: Any) -> CloudSettings:
    return CloudSettings(
        database_url=db_url,
        mqtt={"host": MQTT_HOST, "port": port, "reconnect_min_s": 0.2, "reconnect_max_s": 1},
        ingest={
            "group": unique("g"),
            "client_id": unique("ingest-"),
            "sites": [site],
            "session_expiry_s": 120,
            "health_port": 0,
            "batch_ms": 50,
            **ingest,
        },
    )


def running_ingest(
    settings: CloudSettings, clip_dir: Path
) -> AbstractContextManager[IngestService]:
    return running_ingest_with(settings, FileClipStore(clip_dir))


@contextmanager
def running_ingest_with(settings: CloudSettings, store: ClipStore) -> Iterator[IngestService]:
    require(settings.mqtt.host, settings.mqtt.port, "Mosquitto")
    engine = make_engine(settings.database_url)
    service = IngestService(settings, engine, store)
    service.start()
    assert service.mqtt.wait_connected(10), "ingest did not connect to the broker"
    time.sleep(0.3)  # subscription round trip
    try:
        yield service
    finally:
        service.stop()
        engine.dispose()


class Publisher:
    """A plain MQTT client standing in for devices."""

    def __init__(self, port: int = MQTT_PORT, client_id: str | None = None) -> None:
        require(MQTT_HOST, port, "Mosquitto")
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or unique("pub"),
            protocol=paho.MQTTv5,
        )
        self.client.max_inflight_messages_set(1000)
        self.acks: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.client.on_message = self._on_message
        self.client.connect(MQTT_HOST, port)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic.endswith("/ack") and msg.payload:
            with self._lock:
                self.acks[msg.topic] = json.loads(msg.payload)

    def watch_acks(self, site: str) -> None:
        self.client.subscribe(f"earwitness/v1/{site}/+/ack", qos=1)
        time.sleep(0.2)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def publish_many(self, items: list[tuple[str, bytes]]) -> None:
        infos = [self.client.publish(t, p, qos=1) for t, p in items]
        for info in infos:
            info.wait_for_publish(30)

    def ack_seq(self, topic: str) -> int | None:
        with self._lock:
            ack = self.acks.get(topic)
        return None if ack is None else int(ack["seq"])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def stream_inferences(
    pub: Publisher, dev: Device, seqs: range, pause_s: float, batch: int = 100
) -> tuple[threading.Thread, threading.Event]:
    """Publish ``dev``'s inferences ``seqs`` in batches from a thread, pausing between
    batches, so a fault can be injected mid-stream; the event is set once all are sent."""
    done = threading.Event()

    def send() -> None:
        for start in range(seqs.start, seqs.stop, batch):
            pub.publish_many(
                [
                    (dev.topic(Kind.INFERENCE), wire(dev.inference(s)))
                    for s in range(start, min(seqs.stop, start + batch))
                ]
            )
            time.sleep(pause_s)
        done.set()

    sender = threading.Thread(target=send)
    sender.start()
    return sender, done


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
