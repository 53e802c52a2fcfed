"""Notification channels: signed webhooks, MQTT, e-mail. Each ``send`` raises on failure;
the service retries with backoff and gives up after ``max_attempts`` (dead, listed by the
API), never blocking the rule engine."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

from earwitness.cloud.alerts.rules import AlertSettings, Email, Webhook
from earwitness.shared import __version__

WEBHOOK_TIMEOUT_S = 5.0  # a slow receiver must not hold a sender thread for long
SIGNATURE_HEADER = "X-Earwitness-Signature"
TIMESTAMP_HEADER = "X-Earwitness-Timestamp"
DELIVERY_HEADER = "X-Earwitness-Delivery"  # the same on every retry: receivers dedupe by it
SIGNATURE_TOLERANCE_S = 300  # receivers refuse older timestamps (replayed requests)


class DeliveryError(Exception):
    pass


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``v1=`` HMAC-SHA256 over ``timestamp.body`` (the timestamp is signed so an old
    request cannot be replayed later)."""
    mac = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, header: str, now: float | None = None
) -> bool:
    """What a receiver runs: right key, untouched body, recent timestamp."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= SIGNATURE_TOLERANCE_S and hmac.compare_digest(
        signature(secret, timestamp, body), header
    )


def backoff_s(attempts: int, cap_s: float, rng: random.Random | None = None) -> float:
    """1, 2, 4, ... seconds (capped), +-20 % jitter so many alerts do not retry in step."""
    base = min(cap_s, 2.0 ** max(0, attempts - 1))
    return base * (rng or random).uniform(0.8, 1.2)


def retry_at(attempts: int, settings: AlertSettings) -> datetime | None:
    if attempts >= settings.max_attempts:
        return None
    return datetime.now(UTC) + timedelta(seconds=backoff_s(attempts, settings.retry_max_s))


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, payload: dict[str, Any], delivery: str) -> None: ...


@dataclass
class WebhookChannel:
    hook: Webhook

    @property
    def name(self) -> str:
        return f"webhook:{self.hook.name}"

    def send(self, payload: dict[str, Any], delivery: str) -> None:
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        ts = str(int(time.time()))
        secret = self.hook.secret.get_secret_value().encode()
        request = urllib.request.Request(
            self.hook.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": f"earwitness/{__version__}",
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: signature(secret, ts, body),
                DELIVERY_HEADER: delivery,
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as response:
                response.read(1024)
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"{self.hook.url}: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{self.hook.url}: {reason}") from exc


@dataclass
class EmailChannel:
    email: Email
    name: str = "email"

    def send(self, payload: dict[str, Any], delivery: str) -> None:
        alert = payload["alert"]
        msg = EmailMessage()
        msg["Subject"] = (
            f"[earwitness] {alert['severity']}: {alert['rule']} at {alert['site']}"
            f" ({', '.join(alert['labels'])})"
        )
        msg["From"] = self.email.sender
        msg["To"] = ", ".join(self.email.to)
        msg["Message-ID"] = f"<{delivery}@earwitness>"  # retries share it: mail dedupes
        lines = [
            f"Rule: {alert['rule']} ({alert['severity']})",
            f"Site: {alert['site']}, first device: {alert['device']}",
            f"Started: {alert['started_at']}, last evidence: {alert['last_evidence_at']}",
            f"Location: {alert['lat']}, {alert['lon']}",
            "",
            "Evidence:",
            *(
                f"  {e['at']}  {e['device']}  {e['label']}  score {e['score']:.2f}"
                for e in payload["evidence"]
            ),
        ]
        msg.set_content("\n".join(lines))
        try:
            with smtplib.SMTP(self.email.host, self.email.port, timeout=10) as smtp:
                if self.email.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if self.email.username and self.email.password:
                    smtp.login(self.email.username, self.email.password.get_secret_value())
                smtp.send_message(msg)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"smtp {self.email.host}:{self.email.port}: {exc}") from exc


class MqttChannel:
    """Alerts on ``earwitness/v1/alerts/<site>/<rule>`` (QoS 1, not retained)."""

    name = "mqtt"

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    def send(self, payload: dict[str, Any], delivery: str) -> None:
        from earwitness.shared.topics import alert_topic

        alert = payload["alert"]
        if not self.connection.connected.is_set():
            raise DeliveryError("not connected to the MQTT broker")
        body = json.dumps(payload, separators=(",", ":"), allow_nan=False).encode()
        info = self.connection.publish(alert_topic(alert["site"], alert["rule"]), body, qos=1)
        info.wait_for_publish(5)
        if not info.is_published():
            raise DeliveryError("the broker did not acknowledge the alert in 5 s")
