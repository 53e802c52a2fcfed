"""Send the outbox over MQTT and apply the cloud's acknowledgements and config.

Live messages (created in the last few seconds) go out first; the backlog left by an
outage drains in seq order at ``drain_rate`` so a reconnecting device neither floods its
uplink nor delays what it hears now.

Resending is paced by acknowledgement progress, not by the clock alone: at most
``ACK_WINDOW`` backlog rows are in flight unacknowledged, and overdue rows are sent again
only while acknowledgements have stopped moving (a cloud working through a backlog is
slow, not gone), with the wait doubling per attempt (``Outbox.overdue``). After an outage
a fleet sent every row about twice while the broker redelivered its own queued copies.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as paho

from earwitness.edge.outbox import Outbox, Row
from earwitness.shared import topics
from earwitness.shared.config import MqttSettings
from earwitness.shared.messages import AckMessage, DeviceState, StatusMessage, encode
from earwitness.shared.mqtt import MqttConnection, Will

log = logging.getLogger(__name__)

BATCH = 500
ACK_WINDOW = 2000  # backlog rows sent and not yet acknowledged (one ingest batch)


class Publisher:
    def __init__(
        self,
        settings: MqttSettings,
        outbox: Outbox,
        site: str,
        device: str,
        status: Callable[[DeviceState], StatusMessage],
        ack_timeout_s: float,
        drain_rate: float,
        on_config: Callable[[bytes], None],
    ) -> None:
        self.outbox = outbox
        self.site = site
        self.device = device
        self._status = status
        self.ack_timeout_s = ack_timeout_s
        self.drain_rate = drain_rate
        self._on_config = on_config
        self._stop = threading.Event()
        self.sent = 0
        self.acks = 0
        self._reconnected = threading.Event()
        self.in_flight = 0  # rows sent on this connection and not yet acknowledged
        self._ack_progress = time.monotonic()  # when the ack watermark last moved
        self.resends_held = 0  # overdue resends skipped while acks were moving
        will = Will(
            topics.topic(site, device, topics.Kind.STATUS), encode(status("offline")), 1, True
        )
        # Client id = device id: the broker's ACL ties the device's credentials to it, and
        # a second agent with the same id takes over the session.
        self.mqtt = MqttConnection(settings, device, will=will, max_inflight=1000)
        self.mqtt.on_connect = self._connected
        self.mqtt.on_message = self._message
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    @property
    def connected(self) -> bool:
        return self.mqtt.connected.is_set()

    def start(self) -> None:
        self.mqtt.start()
        self._thread.start()

    def stop(self, flush_s: float = 2.0) -> None:
        """Give the backlog ``flush_s`` to go out, then say goodbye and disconnect."""
        deadline = time.monotonic() + flush_s
        while time.monotonic() < deadline and self.connected:
            if not self.outbox.due(1, self.ack_timeout_s):
                break
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(2)
        if self.connected:
            self.publish_status("offline")
        self.mqtt.stop()

    def publish_status(self, state: DeviceState) -> None:
        info = self.mqtt.publish(
            topics.topic(self.site, self.device, topics.Kind.STATUS),
            encode(self._status(state)),
            qos=1,
            retain=True,
        )
        with contextlib.suppress(RuntimeError, ValueError):
            info.wait_for_publish(1.0)

    def _connected(self, conn: MqttConnection) -> None:
        conn.subscribe(topics.topic(self.site, self.device, topics.Downlink.ACK), qos=1)
        conn.subscribe(topics.topic(self.site, self.device, topics.Downlink.CONFIG), qos=1)
        self._reconnected.set()
        self.publish_status("online")

    def _message(self, msg: paho.MQTTMessage) -> None:
        kind = msg.topic.rsplit("/", 1)[-1]
        if kind == topics.Downlink.ACK:
            try:
                ack = AckMessage.model_validate_json(msg.payload)
            except ValueError as exc:
                log.warning("ignoring malformed ack: %s", exc)
                return
            deleted = self.outbox.ack(ack.epoch, ack.seq)
            self.acks += 1
            if deleted:
                self._ack_progress = time.monotonic()
                self.in_flight = max(0, self.in_flight - deleted)
                log.debug("ack %s: %d messages confirmed", ack.seq, deleted)
        elif kind == topics.Downlink.CONFIG and msg.payload:
            self._on_config(bytes(msg.payload))

    def _run(self) -> None:
        """Three cursors over the outbox: live rows (newer than the last reconnect) go
        out at once; the backlog from before the reconnect drains in seq order at
        ``drain_rate``; rows whose acknowledgement is overdue are re-sent."""
        tokens = 0.0
        last = time.monotonic()
        live_after = backlog_after = backlog_upto = -1
        next_expiry_check = 0.0
        while not self._stop.is_set():
            if not self.connected:
                self._stop.wait(0.1)
                continue
            if self._reconnected.is_set():
                # Sent-but-unacknowledged rows may have died with the broker or the
                # connection: everything still in the outbox is backlog again.
                self._reconnected.clear()
                backlog_after = self.outbox.acked_seq
                backlog_upto = live_after = self.outbox.last_seq
                self.in_flight = 0
                self._ack_progress = time.monotonic()
            now = time.monotonic()
            if self.drain_rate > 0:
                tokens = min(self.drain_rate, tokens + (now - last) * self.drain_rate)
            last = now
            busy = False
            live = self.outbox.rows_after(live_after, BATCH)
            if live:
                live_after = max(live_after, self._send(live, new=True))
                busy = len(live) == BATCH
            if backlog_after < backlog_upto:
                limit = BATCH if self.drain_rate <= 0 else min(BATCH, int(tokens))
                limit = min(limit, ACK_WINDOW - self.in_flight)  # wait for acks to move
                if limit > 0:
                    rows = self.outbox.rows_after(backlog_after, limit, upto=backlog_upto)
                    if rows:
                        backlog_after = max(backlog_after, self._send(rows, new=True))
                        tokens -= len(rows)
                    else:
                        backlog_after = backlog_upto
                busy = busy or backlog_after < backlog_upto
            if now >= next_expiry_check:
                next_expiry_check = now + min(1.0, self.ack_timeout_s / 4)
                if now - self._ack_progress < self.ack_timeout_s:
                    self.resends_held += 1  # acks are moving: the cloud is catching up
                else:
                    overdue = self.outbox.overdue(BATCH, self.ack_timeout_s)
                    if overdue:
                        self._send(overdue)
                        busy = True
            if not busy:
                # Let messages gather for a few ms: one outbox query and one mark_sent
                # per batch instead of one per message.
                self.outbox.new_message.wait(0.05)
                self.outbox.new_message.clear()
                self._stop.wait(0.01)

    def _send(self, rows: list[Row], new: bool = False) -> int:
        """Publish rows in order until one fails; returns the last seq handed to MQTT.
        ``new``: first sends on this connection, which count against ``ACK_WINDOW``."""
        done: list[int] = []
        for row in rows:
            if not self.connected:
                break
            info = self.mqtt.publish(row.topic, row.payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                break
            done.append(row.seq)
        if done:
            self.outbox.mark_sent(done)
            self.sent += len(done)
            if new:
                self.in_flight += len(done)
        return done[-1] if done else -1
