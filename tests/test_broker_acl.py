"""deploy/mosquitto: the production broker config with a generated password file and the
shipped ACL, on a free port. Devices are confined to their own topics."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.services import PrivateBroker, free_port

REPO = Path(__file__).resolve().parent.parent
PASSWORDS = {"dev1": "pw-dev1", "dev2": "pw-dev2", "ingest": "pw-ingest", "admin": "pw-admin"}


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    passwd = shutil.which("mosquitto_passwd")
    if passwd is None:
        pytest.fail("mosquitto_passwd not found (apt-get install mosquitto)")
    pw_file = tmp_path / "passwd"
    pw_file.touch()
    for user, password in PASSWORDS.items():
        subprocess.run([passwd, "-b", str(pw_file), user, password], check=True)
    conf = (REPO / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    conf = (
        conf.replace("/mosquitto/config/passwd", str(pw_file))
        .replace("/mosquitto/config/acl", str(REPO / "deploy" / "mosquitto" / "acl"))
        .replace("/mosquitto/data/", f"{tmp_path}/")
        .replace("listener 1883", "LISTENER")
    )
    port = free_port()
    b = PrivateBroker(port=port)
    # PrivateBroker writes its own anonymous config; replace it with the production one.
    # Run as the test's own user: mosquitto would otherwise drop to its own user and
    # could not read the generated files in the private temp directory.
    b.conf.write_text(
        conf.replace("LISTENER", f"listener {port} 127.0.0.1") + f"\nuser {getpass.getuser()}\n"
    )
    b.start()
    yield port
    b.cleanup()


class Client:
    def __init__(self, port: int, user: str | None, password: str | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connect_rc: Any = None
        self.sub_rcs: list[Any] = []
        self.pub_rcs: dict[int, Any] = {}
        self.connected = threading.Event()
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=user or "anon", protocol=paho.MQTTv5
        )
        if user:
            self.c.username_pw_set(user, password or PASSWORDS[user])
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.sub_rcs.extend(rcs)
        self.c.on_publish = lambda c, u, mid, rc, p: self.pub_rcs.__setitem__(mid, rc)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()
        self.connected.wait(5)

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_rc = rc
        self.connected.set()

    def subscribe(self, topic: str) -> Any:
        before = len(self.sub_rcs)
        self.c.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while len(self.sub_rcs) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.sub_rcs[-1]

    def publish(self, topic: str, payload: bytes = b"x") -> Any:
        info = self.c.publish(topic, payload, qos=1)
        info.wait_for_publish(5)
        deadline = time.monotonic() + 5
        while info.mid not in self.pub_rcs and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.pub_rcs.get(info.mid)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def test_anonymous_and_wrong_password_are_refused(broker: int) -> None:
    anon = Client(broker, None)
    assert anon.connect_rc is not None and anon.connect_rc.is_failure
    wrong = Client(broker, "dev1", "not-the-password")
    assert wrong.connect_rc is not None and wrong.connect_rc.is_failure
    anon.close()
    wrong.close()


def test_devices_are_confined_to_their_own_topics(broker: int) -> None:
    ingest = Client(broker, "ingest")
    admin = Client(broker, "admin")
    dev1 = Client(broker, "dev1")
    assert not ingest.subscribe("$share/ingest/earwitness/v1/+/+/+").is_failure
    # Own uplink: allowed and delivered to ingest.
    assert not dev1.publish("earwitness/v1/site1/dev1/inference", b"mine").is_failure
    # Someone else's topic: refused (MQTT v5 PUBACK "not authorized"), never delivered.
    assert dev1.publish("earwitness/v1/site1/dev2/inference", b"forged").is_failure
    # Writing its own ack would let a device fake the cloud's acknowledgement: refused.
    assert dev1.publish("earwitness/v1/site1/dev1/ack", b"fake").is_failure
    # Reading: its own ack and config yes, another device's or everything no.
    assert not dev1.subscribe("earwitness/v1/site1/dev1/ack").is_failure
    assert not dev1.subscribe("earwitness/v1/site1/dev1/config").is_failure
    # Mosquitto 2.0 grants a wider subscription but checks every delivery against the
    # ACL: dev1 subscribed to everything still only ever receives its own ack and config.
    dev1.subscribe("earwitness/v1/site1/dev2/ack")
    dev1.subscribe("earwitness/v1/#")
    # Ingest acknowledges, admin configures; dev1 receives both, and nothing of dev2's.
    assert not ingest.publish("earwitness/v1/site1/dev2/ack", b"not-yours").is_failure
    assert not ingest.publish("earwitness/v1/site1/dev1/ack", b"ack").is_failure
    assert not admin.publish("earwitness/v1/site1/dev1/config", b"cfg").is_failure
    time.sleep(0.5)
    received = {t: p for t, p in ingest.messages}
    assert received.get("earwitness/v1/site1/dev1/inference") == b"mine"
    assert "earwitness/v1/site1/dev2/inference" not in received
    assert set(dev1.messages) == {
        ("earwitness/v1/site1/dev1/ack", b"ack"),
        ("earwitness/v1/site1/dev1/config", b"cfg"),
    }
    for c in (ingest, admin, dev1):
        c.close()
