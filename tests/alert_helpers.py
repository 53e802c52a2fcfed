"""Real receivers for alert notifications: an HTTP webhook server, an SMTP server
(aiosmtpd) and an MQTT subscriber on the alerts topic."""

from __future__ import annotations

import json
import threading
import time
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from earwitness.cloud.alerts.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.services import MQTT_HOST, MQTT_PORT, free_port, unique

WEBHOOK_SECRET = "test-webhook-secret"


class WebhookReceiver:
    """Records every POST; can go down (port closed) and come back on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.arrived_at: list[float] = []  # time.time() of each request, in step with requests
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.arrived_at.append(time.time())
                    receiver.requests.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _h, body in self.requests]

    def signatures_valid(self) -> bool:
        return all(
            verify_signature(
                WEBHOOK_SECRET.encode(), h[TIMESTAMP_HEADER], body, h[SIGNATURE_HEADER]
            )
            for h, body in self.requests
        )


class SmtpReceiver:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self.messages: list[Message] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                receiver.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class AlertSubscriber:
    def __init__(self, site: str) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=unique("alertsub"), protocol=paho.MQTTv5
        )
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, json.loads(m.payload))
        )
        self.client.connect(MQTT_HOST, MQTT_PORT)
        self.client.subscribe(f"earwitness/v1/alerts/{site}/#", qos=1)
        self.client.loop_start()
        time.sleep(0.3)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


# Glass breaking and a scream within 10 s and 150 m: the rule the tests and bench_alerts use.
DISTRESS_RULE: dict[str, Any] = {
    "name": "distress",
    "severity": "critical",
    "all_of": [
        {"label": "glass_break", "min_score": 0.5},
        {"label": "scream", "min_score": 0.5},
    ],
    "within_s": 10,
    "within_m": 150,
}


def alert_settings(
    webhook: WebhookReceiver, smtp: SmtpReceiver | None, **overrides: Any
) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "rules": [DISTRESS_RULE],
        "poll_s": 0.1,
        "webhooks": [{"name": "ops", "url": webhook.url, "secret": WEBHOOK_SECRET}],
        "mqtt": True,
        "retry_max_s": 2,
    }
    if smtp is not None:
        settings["email"] = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "starttls": False,
            "sender": "earwitness@example.org",
            "to": ["ops@example.org"],
        }
    settings.update(overrides)
    return settings
