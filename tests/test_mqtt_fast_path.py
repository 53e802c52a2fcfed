"""The ingest client's own PUBLISH parse (shared/mqtt.py `_BufferedClient._handle_publish`)
against paho's: the same message for every packet, whatever the topic, payload, flags,
QoS or properties (those it leaves to paho). The real broker path is in
test_ingest_mqtt.py."""

from __future__ import annotations

import struct

import paho.mqtt.client as paho
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from earwitness.shared.mqtt import _BufferedClient


def _packet(topic: bytes, mid: int, qos: int, props: Properties | None, payload: bytes) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    body += props.pack() if props is not None else b"\x00"
    return body + payload


def _parse(cls: type[paho.Client], header: int, packet: bytes, manual: bool) -> tuple:  # type: ignore[type-arg]
    got: list[paho.MQTTMessage] = []
    c = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5, manual_ack=manual)
    c.on_message = lambda _c, _u, m: got.append(m)
    c._in_packet = {"command": header, "packet": packet}
    c._handle_publish()
    (m,) = got
    props = m.properties.json() if m.properties is not None else {}
    return m.topic, m.mid, m.payload, m.dup, m.qos, m.retain, props


@settings(max_examples=300, deadline=None)
@given(
    topic=st.text(min_size=1, max_size=80).map(str.encode),
    mid=st.integers(1, 65535),
    qos=st.sampled_from([0, 1]),  # QoS 2 waits for PUBREL before on_message: paho only
    dup=st.booleans(),
    retain=st.booleans(),
    manual=st.booleans(),
    expiry=st.one_of(st.none(), st.integers(1, 2**31)),
    payload=st.binary(max_size=300),
)
def test_the_fast_parse_and_paho_agree(
    topic: bytes,
    mid: int,
    qos: int,
    dup: bool,
    retain: bool,
    manual: bool,
    expiry: int | None,
    payload: bytes,
) -> None:
    props = None
    if expiry is not None:
        props = Properties(PacketTypes.PUBLISH)
        props.MessageExpiryInterval = expiry
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    packet = _packet(topic, mid, qos, props, payload)
    ours = _parse(_BufferedClient, header, packet, manual)
    theirs = _parse(paho.Client, header, packet, manual)
    assert ours[:6] == theirs[:6]
    if expiry is not None:  # properties present: paho parsed them, they reach the app
        assert ours[6] == theirs[6] == {"MessageExpiryInterval": expiry}


def test_the_fast_parse_serves_what_ingest_receives() -> None:
    """The case it exists for does take the fast path (no Properties object made)."""
    topic = b"earwitness/v1/site/dev1/inference"
    packet = _packet(topic, 7, 1, None, b'{"v":1}')
    assert _parse(_BufferedClient, 0x32, packet, True)[:3] == (topic.decode(), 7, b'{"v":1}')
    got: list[paho.MQTTMessage] = []
    c = _BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5,
                        manual_ack=True)  # fmt: skip
    c.on_message = lambda _c, _u, m: got.append(m)
    c._in_packet = {"command": 0x32, "packet": packet}
    c._handle_publish()
    assert got[0].properties is None  # paho would have built an empty Properties
