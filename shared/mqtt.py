"""An MQTT v5 connection with a start/stop lifecycle, jittered reconnect backoff, TLS,
credentials from files, and an optional last will (paho-mqtt 2.x)."""

from __future__ import annotations

import logging
import random
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from earwitness.shared.config import MqttSettings

log = logging.getLogger(__name__)


_PUBACK = struct.Struct("!BBH")
_PUBACK_BYTE = int(paho.PUBACK)  # 0x40: control packet type 4 in the high nibble

_U16 = struct.Struct("!H")
_QOS1_BITS = 0x02  # QoS 1 in a PUBLISH's fixed header (bits 1-2)

READ_CHUNK = 64 * 1024
"""Bytes per recv(): one call serves hundreds of small messages."""


def remaining_length(n: int) -> bytes:
    """MQTT's remaining length of a packet: 7 bits per byte, least significant first."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _in_packet(command: int, length: int, body: bytearray) -> Any:
    """paho's record of the packet being read, whole (as its own read leaves it)."""
    return {
        "command": command,
        "have_remaining": 1 if command else 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": length,
        "packet": body,
        "to_process": 0,
        "pos": 0,
    }


class _BufferedClient(paho.Client):
    """paho reads every packet with several tiny recv() calls (one byte for the type, one
    per length byte, then the body). At thousands of messages per second those system
    calls, and the GIL hand-offs around each, cost more than handling the messages; this
    client reads 64 KiB at a time and serves paho's small reads from that buffer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ew_buf = b""
        self._ew_pos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._ew_pos >= len(self._ew_buf):
            chunk = super()._sock_recv(READ_CHUNK)  # BlockingIOError when nothing is there
            if not chunk:
                return chunk  # the broker closed the connection
            self._ew_buf, self._ew_pos = chunk, 0
        out = self._ew_buf[self._ew_pos : self._ew_pos + bufsize]
        self._ew_pos += len(out)
        return out

    def _buffered(self) -> bool:
        return self._ew_pos < len(self._ew_buf)

    def loop_read(self, max_packets: int = 1) -> paho.MQTTErrorCode:
        # select() only reports the socket; packets already in our buffer must be handled
        # now, or they would wait for the next bytes from the broker.
        rc = super().loop_read(max_packets)
        while rc == paho.MQTTErrorCode.MQTT_ERR_SUCCESS and self._buffered():
            rc = super().loop_read(max_packets)
        return rc

    # -- a read loop over whole packets in the buffer ----------------------------------
    def _packet_read(self) -> paho.MQTTErrorCode:
        """Every whole packet in the buffer, handled in one loop. paho's own read keeps its
        state in a dict across three small reads per packet, and its dispatch matches each
        topic against the per-topic callbacks: at a fleet's rate those were most of this
        thread (py-spy, 10,000 devices). A packet cut by the end of a read, and the first
        read of a new chunk, go through paho as before."""
        if self._in_packet["command"] != 0:
            return super()._packet_read()  # paho is inside a packet: let it finish
        if self._ew_pos >= len(self._ew_buf):
            try:
                chunk = super()._sock_recv(READ_CHUNK)
            except BlockingIOError:
                return paho.MQTTErrorCode.MQTT_ERR_AGAIN
            except OSError as err:
                log.debug("MQTT socket read failed: %s", err)
                return paho.MQTTErrorCode.MQTT_ERR_CONN_LOST
            if not chunk:
                return paho.MQTTErrorCode.MQTT_ERR_CONN_LOST
            self._ew_buf, self._ew_pos = chunk, 0
        buf, pos, end = self._ew_buf, self._ew_pos, len(self._ew_buf)
        handled = 0
        rc = paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        while pos < end:
            header = buf[pos]
            # the remaining length: 1-4 bytes, 7 bits each, least significant first
            length, mult, at = 0, 1, pos + 1
            while at < end and at - pos <= 4:
                byte = buf[at]
                length += (byte & 0x7F) * mult
                mult <<= 7
                at += 1
                if not byte & 0x80:
                    break
            else:
                break  # cut (or over-long: paho's read reports the protocol error)
            if at + length > end:
                break  # the rest of this packet is still on the socket
            self._ew_pos = pos = at + length
            handled += 1
            # PUBLISH at QoS 1 (ingest's data) or 0 (acks, which match its subscription)
            if (
                (header & 0xF0) == 0x30
                and (header & 0x06) in (0, _QOS1_BITS)
                and self._fast_publish_ok()
                and self._fast_publish(header, buf, at, pos)
            ):
                continue
            self._in_packet = _in_packet(header, length, bytearray(buf[at:pos]))
            try:
                rc = self._packet_handle()
            except MalformedPacket as exc:
                log.debug("malformed MQTT packet: %s", exc)
                rc = paho.MQTTErrorCode.MQTT_ERR_PROTOCOL
            finally:
                self._in_packet = _in_packet(0, 0, bytearray())
            if rc != paho.MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if self._ew_buf is not buf:  # the handler closed the connection
                break
        if handled:
            with self._msgtime_mutex:
                self._last_bytes_received = paho.time_func()
            return rc
        return super()._packet_read()  # a packet cut by the chunk's end

    def _fast_publish_ok(self) -> bool:
        return self._protocol == paho.MQTTv5 and self._manual_ack

    def _fast_publish(self, header: int, buf: bytes, start: int, stop: int) -> bool:
        """A QoS 0 or 1 PUBLISH without properties, straight from the buffer to
        on_message; False leaves it to paho (properties, or too short to be one)."""
        qos = (header >> 1) & 0x03
        if stop - start < 3 + 2 * qos:
            return False
        (topic_len,) = _U16.unpack_from(buf, start)
        if topic_len == 0:
            return False  # a topic alias: paho's
        props_at = start + 2 + topic_len + 2 * qos
        if props_at >= stop or buf[props_at] != 0:
            return False
        mid = _U16.unpack_from(buf, start + 2 + topic_len)[0] if qos else 0
        message = paho.MQTTMessage(mid=mid, topic=buf[start + 2 : start + 2 + topic_len])
        message.dup = bool(header & 0x08)
        message.qos = qos
        message.retain = bool(header & 0x01)
        message.payload = buf[props_at + 1 : stop]
        message.timestamp = paho.time_func()
        self._dispatch(message)
        return True

    def _dispatch(self, message: paho.MQTTMessage) -> None:
        """on_message without paho's topic match when no per-topic callback is set (ingest
        sets none): the match split and walked every topic."""
        if self._on_message_filtered._root._children or self.on_message is None:
            self._handle_on_message(message)
            return
        with self._in_callback_mutex:
            try:
                self.on_message(self, self._userdata, message)
            except Exception as err:
                log.error("MQTT on_message callback failed: %s", err)
                if not self.suppress_exceptions:
                    raise

    def publish_many(self, items: list[tuple[str, bytes]], retain: bool) -> paho.MQTTErrorCode:
        """Many QoS 0 messages as one queued write: paho builds, queues and wakes its
        network thread (a system call) for each publish, and ingest publishes an ack per
        device after every commit. Nothing is queued without a connection, as in paho (a
        QoS 0 message then is dropped; ingest republishes its acks on reconnect)."""
        if self._sock is None:
            return paho.MQTTErrorCode.MQTT_ERR_NO_CONN
        if not items:
            return paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        command = 0x30 | (0x01 if retain else 0)
        props = b"\x00" if self._protocol == paho.MQTTv5 else b""
        out = bytearray()
        for topic, payload in items:
            if "+" in topic or "#" in topic or "\x00" in topic:
                raise ValueError(f"publish topic may not contain +, # or NUL: {topic[:200]!r}")
            encoded = topic.encode()
            out.append(command)
            out += remaining_length(2 + len(encoded) + len(props) + len(payload))
            out += _U16.pack(len(encoded))
            out += encoded
            out += props
            out += payload
        return self._packet_queue(command, bytes(out), 0, 0, paho.MQTTMessageInfo(0))

    def _sock_close(self) -> None:
        self._ew_buf, self._ew_pos = b"", 0  # bytes of a dead connection mean nothing
        super()._sock_close()

    def _handle_publish(self) -> paho.MQTTErrorCode:
        """The common case without paho's general parse: an MQTT v5 QoS 1 PUBLISH with no
        properties, acknowledged by the application (ingest). paho builds a Properties
        object for every v5 PUBLISH, properties or not: 15 of its 21 us per message, in
        the thread that also reads the socket. tests/test_mqtt_fast_path.py holds the two
        parses to the same result. Anything else
        (QoS 0 or 2, properties, automatic acks, a malformed length) goes to paho."""
        packet = self._in_packet["packet"]
        header = self._in_packet["command"]
        if (
            self._protocol != paho.MQTTv5
            or not self._manual_ack
            or (header & 0x06) != _QOS1_BITS
            or len(packet) < 5
        ):
            return super()._handle_publish()
        (topic_len,) = _U16.unpack_from(packet, 0)
        props_at = 2 + topic_len + 2
        if props_at >= len(packet) or packet[props_at] != 0:  # properties: paho parses them
            return super()._handle_publish()
        (mid,) = _U16.unpack_from(packet, 2 + topic_len)
        message = paho.MQTTMessage(mid=mid, topic=bytes(packet[2 : 2 + topic_len]))
        message.dup = bool(header & 0x08)
        message.qos = 1
        message.retain = bool(header & 0x01)
        message.payload = bytes(packet[props_at + 1 :])
        message.timestamp = paho.time_func()
        self._dispatch(message)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK many QoS 1 messages as one write: paho queues each acknowledgement as its
        own packet, wakes its network thread and issues a send() per packet. A PUBACK is
        four bytes (type, length 2, packet id); concatenated, they are the same stream."""
        if not mids:
            return
        blob = b"".join(_PUBACK.pack(_PUBACK_BYTE, 2, mid) for mid in mids)
        self._packet_queue(_PUBACK_BYTE, blob, 0, 0)


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def reconnect_delay(
    attempt: int, min_s: float, max_s: float, rng: random.Random | None = None
) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (0: the first after a loss): a
    random point between ``min_s`` and a cap that doubles per attempt up to ``max_s``
    ("full jitter" with a floor). Devices that lost the broker together then return spread
    over the cap, not all in the same second."""
    cap = min(max_s, min_s * 2.0 ** min(attempt + 1, 32))
    return (rng or random).uniform(min_s, max(min_s, cap))


class MqttConnection:
    """Owns one paho client. ``start()`` connects in the background and keeps reconnecting
    with jittered exponential backoff until ``stop()``."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        clean_start: bool = True,
        session_expiry_s: int = 0,
        receive_maximum: int | None = None,
        will: Will | None = None,
        manual_ack: bool = False,
        max_inflight: int = 1000,
        max_queued: int = 0,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self._clean_start = clean_start
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self.connected = threading.Event()
        self.on_connect: Callable[[MqttConnection], None] | None = None
        self.on_message: Callable[[paho.MQTTMessage], None] | None = None
        self.on_disconnect: Callable[[MqttConnection], None] | None = None
        self.client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=manual_ack,
        )
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(max_queued)
        password = settings.resolved_password()
        if settings.username is not None:
            self.client.username_pw_set(settings.username, password)
        if settings.tls:
            ctx = ssl.create_default_context(
                cafile=str(settings.ca_file) if settings.ca_file else None
            )
            if settings.cert_file and settings.key_file:
                ctx.load_cert_chain(str(settings.cert_file), str(settings.key_file))
            self.client.tls_set_context(ctx)
        if will is not None:
            self.client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._failed_attempts = 0
        self._schedule_retry()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_connect_fail = self._on_connect_fail

    def _schedule_retry(self) -> None:
        """Set the wait before paho's next attempt to one jittered delay: paho doubles its
        own delay with no jitter, so a fleet that lost its broker at one instant would
        knock again at one instant, every time (bench/fleet.py --backoff doubling)."""
        self._next_retry_s = reconnect_delay(
            self._failed_attempts, self.settings.reconnect_min_s, self.settings.reconnect_max_s
        )
        # min == max: paho's next wait is exactly this delay (min(2 * delay, max)).
        self.client.reconnect_delay_set(min_delay=self._next_retry_s, max_delay=self._next_retry_s)  # type: ignore[arg-type]

    def _connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        if self._session_expiry_s:
            props.SessionExpiryInterval = self._session_expiry_s
        if self._receive_maximum:
            props.ReceiveMaximum = self._receive_maximum
        return props

    def start(self) -> None:
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive_s,
            clean_start=self._clean_start,
            properties=self._connect_properties(),
        )
        self.client.loop_start()

    def stop(self, timeout_s: float = 5.0) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.connected.clear()

    def wait_connected(self, timeout_s: float) -> bool:
        return self.connected.wait(timeout_s)

    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def publish_many(
        self, items: list[tuple[str, bytes]], qos: int = 0, retain: bool = False
    ) -> None:
        """Publish many messages; at QoS 0 as one write (ingest's acks after a commit)."""
        client = self.client
        if qos == 0 and isinstance(client, _BufferedClient):
            client.publish_many(items, retain)
            return
        for topic, payload in items:
            client.publish(topic, payload, qos=qos, retain=retain)

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.client.subscribe(topic_filter, qos=qos)

    def ack(self, mid: int, qos: int = 1) -> None:
        self.client.ack(mid, qos)

    def ack_many(self, mids: list[int]) -> None:
        """Acknowledge QoS 1 messages of the current connection in one write."""
        self.client.ack_many(mids)

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("MQTT %s: connection refused: %s", self.client_id, reason)
            self._failed_attempts += 1  # refused again and again: back off like unreachable
            return
        log.info(
            "MQTT %s connected to %s:%s", self.client_id, self.settings.host, self.settings.port
        )
        self._failed_attempts = 0
        self.connected.set()
        if self.on_connect:
            self.on_connect(self)

    def next_retry_s(self) -> float:
        """The wait before the next connection attempt."""
        return self._next_retry_s

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # Without this an unreachable broker was silent: nothing in the log for 22 s.
        self._failed_attempts += 1
        self._schedule_retry()
        log.warning(
            "MQTT %s: cannot reach %s:%s%s (attempt %d); next try in about %.0f s",
            self.client_id,
            self.settings.host,
            self.settings.port,
            " over TLS" if self.settings.tls else "",
            self._failed_attempts,
            self.next_retry_s(),
        )

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected.clear()
        self._schedule_retry()
        if reason is not None and getattr(reason, "is_failure", False):
            log.warning(
                "MQTT %s disconnected from %s:%s: %s; reconnecting in about %.0f s",
                self.client_id,
                self.settings.host,
                self.settings.port,
                reason,
                self.next_retry_s(),
            )
        if self.on_disconnect:
            self.on_disconnect(self)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self.on_message:
            self.on_message(msg)
