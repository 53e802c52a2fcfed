"""Ingest's MQTT receive and ack path, per message, without a broker: what one core of the
ingest parent can do before the database is involved.

A socket pair stands in for the broker connection. ``receive``: N QoS 1 PUBLISH packets
(MQTT v5, no properties, a ~700-byte inference payload, one topic per device) are written
to one end; the client reads them with ``loop_read`` until its ``on_message`` has seen
them all. ``acks``: N retained QoS 0 acks, one per device, queued and written to the
socket, as ingest publishes them after a commit. Both for paho's own client and for
ingest's (``shared.mqtt._BufferedClient``).

    .venv/bin/python bench/bench_receive.py --messages 200000
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench._common import machine
from earwitness.shared.messages import AckMessage
from earwitness.shared.mqtt import _BufferedClient, remaining_length

PAYLOAD = b'{"v":1,"kind":"inference","scores":' + b"[0.1234]" * 80 + b"}"


def publishes(n: int, devices: int) -> bytes:
    out = bytearray()
    for i in range(n):
        topic = f"earwitness/v1/site{i % 100}/dev{i % devices:05d}/inference".encode()
        body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", i % 65535 + 1)
        body += b"\x00" + PAYLOAD  # no properties
        out += b"\x32" + remaining_length(len(body)) + body
    return bytes(out)


def _client(cls: type[paho.Client]) -> tuple[paho.Client, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    c = cls(CallbackAPIVersion.VERSION2, client_id="bench", protocol=paho.MQTTv5, manual_ack=True)
    c._sock = ours
    c._state = paho._ConnectionState.MQTT_CS_CONNECTED
    return c, theirs


def receive(cls: type[paho.Client], n: int, devices: int) -> float:
    """Seconds per message from bytes on the socket to on_message."""
    c, broker = _client(cls)
    data = publishes(n, devices)
    got = 0

    def on_message(_c: Any, _u: Any, m: paho.MQTTMessage) -> None:
        nonlocal got
        got += 1
        _ = (m.topic, m.payload, m.mid)  # what ingest reads of every message

    c.on_message = on_message
    writer = threading.Thread(target=broker.sendall, args=(data,), daemon=True)
    t0 = time.perf_counter()
    writer.start()
    while got < n:
        c.loop_read()
    elapsed = time.perf_counter() - t0
    writer.join()
    broker.close()
    return elapsed / n


def acks(batched: bool, n: int) -> float:
    """Seconds per ack from the publish call until its bytes are on the socket."""
    c, broker = _client(_BufferedClient)
    drained = threading.Event()
    expected = 0
    items = []
    for i in range(n):
        ack = AckMessage(epoch="e" * 16, seq=i, ts=datetime.now(UTC))
        items.append(
            (f"earwitness/v1/site{i % 100}/dev{i:05d}/ack", ack.model_dump_json().encode())
        )
    for topic, payload in items:
        expected += 1 + len(remaining_length(2 + len(topic) + 1 + len(payload)))
        expected += 2 + len(topic) + 1 + len(payload)

    def drain() -> None:
        seen = 0
        while seen < expected:
            seen += len(broker.recv(1 << 20))
        drained.set()

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    t0 = time.perf_counter()
    if batched:
        c.publish_many(items, retain=True)  # type: ignore[attr-defined]
    else:
        for topic, payload in items:
            c.publish(topic, payload, qos=0, retain=True)
    while not drained.is_set():
        c.loop_write()
    elapsed = time.perf_counter() - t0
    broker.close()
    return elapsed / n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--devices", type=int, default=10_000)
    args = p.parse_args()
    print(f"machine: {machine()}; {args.messages} messages from {args.devices} devices")
    for name, cls in (("paho.Client", paho.Client), ("ingest's client", _BufferedClient)):
        per = receive(cls, args.messages, args.devices)
        print(f"receive, {name}: {per * 1e6:.2f} us per message ({1 / per:,.0f} msg/s on one core)")
    for name, batched in (("one publish() per ack", False), ("publish_many", True)):
        per = acks(batched, min(args.messages, 50_000))
        print(f"acks, {name}: {per * 1e6:.2f} us per ack ({1 / per:,.0f} acks/s on one core)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
