"""deploy/mosquitto with the real Mosquitto: the production config, TLS certificates from
deploy/make-certs.sh and users from deploy/onboard-device.sh, on private ports.

A table of who tries what: anonymous, wrong passwords, a device's own topics, another
device's, another site, ack and config writes, `#` and `$share` subscriptions, client-id
takeover of a device and of ingest, credentials on the wrong listener.
"""

from __future__ import annotations

import getpass
import re
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.services import PrivateBroker, free_port, port_open

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.mqtt


@dataclass
class Broker:
    devices_port: int
    services_port: int
    ca: Path
    passwords: dict[str, str]
    dir: Path


def _onboard(broker_dir: Path, *args: str) -> str:
    out = subprocess.run(
        [str(REPO / "deploy/onboard-device.sh"), "--broker-dir", str(broker_dir), *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"password: (\S+)", out)
    assert match, out
    return match.group(1)


@pytest.fixture
def broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    certs, bdir = tmp_path / "certs", tmp_path / "broker"
    subprocess.run(
        [str(REPO / "deploy/make-certs.sh"), "--out", str(certs), "--host", "localhost"],
        check=True,
        capture_output=True,
    )
    passwords = {
        "dev1": _onboard(bdir, "--site", "site1", "dev1"),
        "dev2": _onboard(bdir, "--site", "site1", "dev2"),
        "ingest": _onboard(bdir, "--service", "ingest"),
        "config": _onboard(bdir, "--service", "config"),
        "health": _onboard(bdir, "--service", "health"),
    }
    dev_port, svc_port = free_port(), free_port()
    conf = (REPO / "deploy/mosquitto/mosquitto.conf").read_text()
    conf = (
        conf.replace("/mosquitto/config/", f"{bdir}/")
        .replace("/mosquitto/certs/", f"{certs}/")
        .replace("/mosquitto/data/", f"{tmp_path}/")
        .replace("listener 8883", f"listener {dev_port} 127.0.0.1")
        .replace("listener 1883", f"listener {svc_port} 127.0.0.1")
    )
    b = PrivateBroker(port=dev_port)
    # Run as the test's own user: mosquitto would otherwise drop to its own user and
    # could not read the generated files in the private temp directory.
    b.conf.write_text(conf + f"\nuser {getpass.getuser()}\n")
    b.start()
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", svc_port, 0.2):
        assert time.monotonic() < deadline, "services listener did not open"
        time.sleep(0.05)
    yield Broker(dev_port, svc_port, certs / "ca.crt", passwords, bdir)
    b.cleanup()


class Client:
    def __init__(
        self,
        broker: Broker,
        user: str | None,
        password: str | None = None,
        client_id: str | None = None,
        listener: str = "devices",
    ) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.connect_rc: Any = None
        self.disconnected = threading.Event()
        self.sub_rcs: list[Any] = []
        self.pub_rcs: dict[int, Any] = {}
        self.connected = threading.Event()
        self.c = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or user or "anon", protocol=paho.MQTTv5
        )
        if user:
            self.c.username_pw_set(user, password or broker.passwords[user])
        if listener == "devices":
            self.c.tls_set(ca_certs=str(broker.ca), tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = lambda c, u, f, rc, p: self.disconnected.set()
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.sub_rcs.extend(rcs)
        self.c.on_publish = lambda c, u, mid, rc, p: self.pub_rcs.__setitem__(mid, rc)
        port = broker.devices_port if listener == "devices" else broker.services_port
        self.c.connect("localhost", port)
        self.c.loop_start()
        self.connected.wait(5)

    @property
    def ok(self) -> bool:
        return self.connect_rc is not None and not self.connect_rc.is_failure

    def _on_connect(self, c: Any, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connect_rc = rc
        self.connected.set()

    def subscribe(self, topic: str) -> None:
        before = len(self.sub_rcs)
        self.c.subscribe(topic, qos=1)
        deadline = time.monotonic() + 5
        while len(self.sub_rcs) == before and time.monotonic() < deadline:
            time.sleep(0.02)

    def publish(self, topic: str, payload: bytes = b"x", retain: bool = False) -> bool:
        """True when the broker accepted it (MQTT v5 PUBACK without an error)."""
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)
        deadline = time.monotonic() + 5
        while info.mid not in self.pub_rcs and time.monotonic() < deadline:
            time.sleep(0.02)
        rc = self.pub_rcs.get(info.mid)
        return rc is not None and not rc.is_failure

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


# (who, password or None for theirs, listener, expected to connect)
CONNECTIONS = [
    ("anonymous on the device listener", None, "bad", "devices", False),
    ("anonymous on the services listener", None, "bad", "services", False),
    ("dev1 with a wrong password", "dev1", "not-the-password", "devices", False),
    ("dev1 with the sample password", "dev1", "changeme", "devices", False),
    ("dev1 on its listener", "dev1", None, "devices", True),
    ("dev1 on the services listener", "dev1", None, "services", False),
    ("ingest on the services listener", "ingest", None, "services", True),
    ("ingest on the device listener", "ingest", None, "devices", False),
]


@pytest.mark.parametrize(
    ("who", "user", "password", "listener", "allowed"),
    CONNECTIONS,
    ids=[c[0] for c in CONNECTIONS],
)
def test_who_may_connect_where(
    broker: Broker, who: str, user: str | None, password: str | None, listener: str, allowed: bool
) -> None:
    client = Client(
        broker, None if user is None else user, password, listener=listener, client_id=who[:20]
    )
    assert client.ok is allowed, f"{who}: {client.connect_rc}"
    client.close()


# (publisher, topic, retain, accepted). dev1 is at site1.
PUBLISHES = [
    ("dev1", "earwitness/v1/site1/dev1/inference", False, True),
    ("dev1", "earwitness/v1/site1/dev1/status", True, True),
    ("dev1", "earwitness/v1/siteB/dev1/inference", False, False),  # another site
    ("dev1", "earwitness/v1/site1/dev2/inference", False, False),  # another device
    ("dev1", "earwitness/v1/site1/dev1/ack", False, False),  # faking the cloud's ack
    ("dev1", "earwitness/v1/site1/dev1/config", True, False),  # configuring itself
    ("dev1", "earwitness/v1/site1/dev2/config", True, False),
    ("dev1", "$SYS/broker/uptime", False, False),
    ("ingest", "earwitness/v1/site1/dev1/ack", True, True),
    ("ingest", "earwitness/v1/site1/dev1/config", True, False),  # only config pushes it
    ("ingest", "earwitness/v1/site1/dev1/inference", False, False),  # forging device data
    ("config", "earwitness/v1/site1/dev1/config", True, True),
    ("config", "earwitness/v1/site1/dev1/ack", True, False),
    ("health", "earwitness/v1/site1/dev1/ack", False, False),
]


def test_publish_matrix(broker: Broker) -> None:
    clients = {
        "dev1": Client(broker, "dev1"),
        "ingest": Client(broker, "ingest", listener="services"),
        "config": Client(broker, "config", listener="services"),
        "health": Client(broker, "health", listener="services"),
    }
    try:
        wrong = [
            (who, topic, accepted)
            for who, topic, retain, accepted in PUBLISHES
            if clients[who].publish(topic, b"x", retain) is not accepted
        ]
        assert wrong == [], f"(publisher, topic, expected) that went the other way: {wrong}"
    finally:
        for c in clients.values():
            c.close()


def test_reads_are_confined_whatever_is_subscribed(broker: Broker) -> None:
    ingest = Client(broker, "ingest", listener="services")
    config = Client(broker, "config", listener="services")
    dev1, dev2 = Client(broker, "dev1"), Client(broker, "dev2")
    try:
        ingest.subscribe("$share/ingest/earwitness/v1/+/+/+")
        for topic in (
            "earwitness/v1/#",
            "#",
            "$share/g/earwitness/v1/#",
            "earwitness/v1/site1/dev2/ack",
        ):
            dev1.subscribe(topic)
        assert dev2.publish("earwitness/v1/site1/dev2/inference", b"dev2-data")
        assert dev1.publish("earwitness/v1/site1/dev1/inference", b"mine")
        assert ingest.publish("earwitness/v1/site1/dev2/ack", b"not-yours")
        assert ingest.publish("earwitness/v1/site1/dev1/ack", b"ack")
        assert config.publish("earwitness/v1/site1/dev1/config", b"cfg")
        time.sleep(0.7)
        assert set(dev1.messages) == {
            ("earwitness/v1/site1/dev1/ack", b"ack"),
            ("earwitness/v1/site1/dev1/config", b"cfg"),
        }
        # Ingest's wildcard matches its own acks and config too; the ACL keeps them from
        # being delivered back (at fleet scale one delivery per ack: bench/fleet.py --acl).
        assert sorted(ingest.messages) == [
            ("earwitness/v1/site1/dev1/inference", b"mine"),
            ("earwitness/v1/site1/dev2/inference", b"dev2-data"),
        ]
    finally:
        config.publish("earwitness/v1/site1/dev1/config", b"", retain=True)
        for c in (ingest, config, dev1, dev2):
            c.close()


def test_client_id_takeover_is_impossible(broker: Broker) -> None:
    """On the device listener the client id is the username: a device that claims another
    device's or ingest's client id gets its own, and nobody is kicked off."""
    ingest = Client(broker, "ingest", client_id="ingest-prod", listener="services")
    dev1 = Client(broker, "dev1")
    ingest.subscribe("$share/ingest/earwitness/v1/+/+/+")
    impostor = Client(broker, "dev2", client_id="dev1")
    impostor2 = Client(broker, "dev2", client_id="ingest-prod")
    try:
        assert impostor.ok and impostor2.ok  # connected, but as dev2
        time.sleep(0.5)
        assert not dev1.disconnected.is_set() and not ingest.disconnected.is_set()
        assert dev1.publish("earwitness/v1/site1/dev1/inference", b"still-here")
        time.sleep(0.3)
        assert ("earwitness/v1/site1/dev1/inference", b"still-here") in ingest.messages
    finally:
        for c in (ingest, dev1, impostor, impostor2):
            c.close()


def test_onboarding_refuses_reserved_names_and_revokes(broker: Broker) -> None:
    script = str(REPO / "deploy/onboard-device.sh")
    reserved = subprocess.run(
        [script, "--broker-dir", str(broker.dir), "--site", "s", "ingest-prod"],
        capture_output=True,
        text=True,
    )
    assert reserved.returncode == 2 and "reserved" in reserved.stderr
    subprocess.run([script, "--broker-dir", str(broker.dir), "--revoke", "dev2"], check=True)
    acl = (broker.dir / "devices.acl").read_text()
    assert "user dev2" not in acl and "user dev1" in acl
    assert "dev2:" not in (broker.dir / "devices.passwd").read_text()
