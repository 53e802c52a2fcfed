"""The demo's embedded Mosquitto keeps retained messages across a restart, also when
started as root (it drops to its own user before it writes its persistence file)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from earwitness.cloud.broker import EmbeddedBroker
from tests.services import free_port, unique


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _client(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("emb"))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


@pytest.mark.parametrize("parent_mode", [0o755, 0o700], ids=["open-parent", "private-parent"])
def test_embedded_mosquitto_saves_retained_messages(parent_mode: int) -> None:
    """Open parent: as root the broker drops to user mosquitto, which owns the data
    directory. Private parent (like pytest's own tmp tree): it stays root, still saves."""
    parent = Path(tempfile.mkdtemp(prefix="ew-embedded-"))
    parent.chmod(parent_mode)
    data = parent / "broker"
    port = free_port()
    topic = f"earwitness/test/{unique('t')}"
    broker = EmbeddedBroker(port, data, prefer="mosquitto")
    try:
        broker.start()
        assert broker.kind == "mosquitto"
        pub = _client(port)
        pub.publish(topic, b"kept", qos=1, retain=True).wait_for_publish(5)
        pub.loop_stop()
        pub.disconnect()
        broker.stop()  # saves on a clean stop
        assert list(data.glob("*.db")), f"no persistence file in {data}: the broker cannot write"
        if os.geteuid() == 0 and parent_mode == 0o755 and _has_user("mosquitto"):
            assert data.stat().st_uid == pwd.getpwnam("mosquitto").pw_uid
        broker = EmbeddedBroker(port, data, prefer="mosquitto")
        broker.start()
        got: list[bytes] = []
        sub = _client(port)
        sub.on_message = lambda c, u, m: got.append(bytes(m.payload))
        sub.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        sub.loop_stop()
        sub.disconnect()
        assert got == [b"kept"]
    finally:
        broker.stop()
        shutil.rmtree(parent, ignore_errors=True)
