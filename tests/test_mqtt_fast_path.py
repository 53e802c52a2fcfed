"""The ingest client's own PUBLISH parse (shared/mqtt.py `_BufferedClient._handle_publish`)
against paho's: the same message for every packet, whatever the topic, payload, flags,
QoS or properties (those it leaves to paho). The real broker path is in
test_ingest_mqtt.py."""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import struct

import paho.mqtt.client as paho
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from earwitness.shared.mqtt import _BufferedClient, remaining_length


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


# -- the read loop over whole packets in the buffer (`_BufferedClient._packet_read`) --------
PINGRESP = b"\xd0\x00"


@st.composite
def _stream_packets(draw: st.DrawFn) -> list[bytes]:
    packets = []
    for _ in range(draw(st.integers(1, 25))):
        if draw(st.integers(0, 9)) == 0:
            packets.append(PINGRESP)
            continue
        qos = draw(st.sampled_from([0, 1, 1, 1]))
        props = None
        if draw(st.integers(0, 4)) == 0:
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = draw(st.integers(1, 2**31))
        topic = draw(st.text(min_size=1, max_size=40)).encode()  # empty: an alias, paho
        # up to 20 kB: remaining lengths of one, two and three bytes
        payload = draw(st.binary(max_size=20_000) | st.binary(max_size=30))
        body = _packet(topic, draw(st.integers(1, 65535)), qos, props, payload)
        header = 0x30 | (qos << 1) | (0x01 if draw(st.booleans()) else 0)
        packets.append(bytes([header]) + remaining_length(len(body)) + body)
    return packets


def _read_stream(cls: type[paho.Client], chunks: list[bytes]) -> tuple[list[tuple], float]:  # type: ignore[type-arg]
    """Feed the chunks through a socket one at a time, reading after each like the
    network thread does; what on_message saw, and the last-received time paho keeps."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5, manual_ack=True)
    c._sock = ours
    got: list[tuple] = []  # type: ignore[type-arg]
    c.on_message = lambda _c, _u, m: got.append(
        (m.topic, m.mid, m.payload, m.qos, m.dup, m.retain,
         m.properties.json() if m.properties is not None else {})
    )  # fmt: skip
    c._ping_t = 1.0  # a PINGRESP clears it
    for chunk in chunks:
        broker.sendall(chunk)
        # read until the socket is drained (and, for ours, its buffer)
        while select.select([ours], [], [], 0)[0] or (
            isinstance(c, _BufferedClient) and c._buffered()
        ):
            assert c.loop_read() == paho.MQTTErrorCode.MQTT_ERR_SUCCESS
    broker.close()
    ours.close()
    return got, c._ping_t


@settings(max_examples=150, deadline=None)
@given(packets=_stream_packets(), cuts=st.lists(st.integers(0, 100_000), max_size=8))
def test_the_read_loop_and_paho_receive_the_same_stream(
    packets: list[bytes], cuts: list[int]
) -> None:
    """Whatever the packets and wherever the stream is cut (one packet over several reads,
    several in one), both clients hand on the same messages in the same order."""
    stream = b"".join(packets)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points) if b > a]
    ours, our_ping = _read_stream(_BufferedClient, chunks)
    theirs, their_ping = _read_stream(paho.Client, chunks)
    assert ours == theirs
    assert len(ours) == sum(p != PINGRESP for p in packets)
    assert our_ping == their_ping  # a PINGRESP handled (or not) alike


def test_the_read_loop_reports_a_closed_connection() -> None:
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c = _BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5)
    c._sock = ours
    broker.close()
    assert c._packet_read() == paho.MQTTErrorCode.MQTT_ERR_CONN_LOST


def test_the_read_loop_refuses_an_overlong_remaining_length() -> None:
    """Five length bytes are a protocol error (at most four), as in paho."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c = _BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5)
    c._sock = ours
    broker.sendall(b"\x32\xff\xff\xff\xff\x01" + b"x" * 100)
    assert c._packet_read() == paho.MQTTErrorCode.MQTT_ERR_PROTOCOL


# -- many QoS 0 publishes as one write (`publish_many`, ingest's acks) ---------------------
def _written(c: paho.Client, peer: socket.socket) -> bytes:
    while c.want_write():
        c.loop_write()
    peer.setblocking(False)
    out = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := peer.recv(1 << 20):
            out += chunk
    return out


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(
        st.tuples(
            st.text(min_size=1, max_size=60).filter(lambda t: not set(t) & {"+", "#", "\x00"}),
            st.binary(max_size=400),
        ),
        max_size=30,
    ),
    retain=st.booleans(),
    protocol=st.sampled_from([paho.MQTTv5, paho.MQTTv311]),
)
def test_publish_many_writes_what_paho_writes_per_publish(
    items: list[tuple[str, bytes]], retain: bool, protocol: int
) -> None:
    streams = []
    for batched in (True, False):
        ours, peer = socket.socketpair()
        ours.setblocking(False)
        c = _BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=protocol)
        c._sock = ours
        if batched:
            c.publish_many(items, retain)
        else:
            for topic, payload in items:
                c.publish(topic, payload, qos=0, retain=retain)
        streams.append(_written(c, peer))
        ours.close()
        peer.close()
    assert streams[0] == streams[1]


def test_publish_many_refuses_a_wildcard_topic_and_queues_nothing_offline() -> None:
    c = _BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5)
    assert c.publish_many([("a/b", b"x")], True) == paho.MQTTErrorCode.MQTT_ERR_NO_CONN
    ours, _peer = socket.socketpair()
    c._sock = ours
    try:
        c.publish_many([("a/+/b", b"x")], True)
    except ValueError as exc:
        assert "a/+/b" in str(exc)
    else:
        raise AssertionError("a wildcard topic was published")
