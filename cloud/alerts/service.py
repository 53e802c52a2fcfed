"""`earwitness alerts`: read committed events, run the rules, record alerts, notify.

Two threads. The evaluator polls the events table in id order (re-reading the last
``RESCAN_IDS`` rows each time, so a transaction that committed late is still seen; the
engine ignores what it has already seen), feeds the rule engine, and records its
decisions idempotently. The notifier leases due notifications and sends them on a small
pool, so a slow webhook never holds up evaluation or the other channels.
Replicas may run side by side: alerts, evidence and notifications are unique by key, and
notification leases keep two replicas from sending the same one at once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine

from earwitness.cloud.alerts import homeassistant
from earwitness.cloud.alerts.engine import Decision, Detection, RuleEngine
from earwitness.cloud.alerts.notify import (
    Channel,
    DeliveryError,
    EmailChannel,
    MqttChannel,
    WebhookChannel,
    retry_at,
)
from earwitness.cloud.alerts.rules import AlertSettings, Rule
from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.models import Alert, AlertEvidence, Event
from earwitness.cloud.db.repo import alert_rules as rules_repo
from earwitness.cloud.db.repo import alerts as repo
from earwitness.cloud.db.repo import devices as device_repo
from earwitness.cloud.settings import CloudSettings
from earwitness.shared.service import DEFAULT_STOP_TIMEOUT_S, Health, Service

log = logging.getLogger(__name__)

RULES_RELOAD_S = 5.0  # how soon a rule saved through the API runs, and goes
RESCAN_IDS = 500  # events re-read each poll: covers ids committed out of order
BATCH = 5000  # events per poll
LEASE_S = 60.0  # a notification being sent; another replica may take it after this
SENDERS = 4  # notifications sent in parallel
CURSOR_NAME = "default"


def detection_of(e: Event | AlertEvidence, key: str | None = None) -> Detection:
    if isinstance(e, Event):
        return Detection(
            key=f"{e.device_id}/{e.event_id}",
            row_id=e.id,
            device_id=e.device_id,
            site=e.site,
            label=e.label,
            score=e.peak_score,
            at=e.started_at,
            lat=e.lat,
            lon=e.lon,
        )
    return Detection(
        key=key or e.evidence_key,
        row_id=e.event_row_id,
        device_id=e.device_id,
        site="",
        label=e.label,
        score=e.score,
        at=e.at,
        lat=e.lat,
        lon=e.lon,
    )


def payload_of(alert: Alert, evidence: list[AlertEvidence]) -> dict[str, Any]:
    return {
        "alert": {
            "id": alert.id,
            "fingerprint": alert.fingerprint,
            "rule": alert.rule,
            "severity": alert.severity,
            "state": alert.state,
            "site": alert.site,
            "device": alert.device_id,
            "labels": alert.labels.split(","),
            "started_at": alert.started_at.isoformat(),
            "last_evidence_at": alert.last_evidence_at.isoformat(),
            "lat": alert.lat,
            "lon": alert.lon,
        },
        "evidence": [
            {
                "device": e.device_id,
                "label": e.label,
                "score": round(e.score, 4),
                "at": e.at.isoformat(),
                "lat": e.lat,
                "lon": e.lon,
                "event_row_id": e.event_row_id,
            }
            for e in evidence
        ],
    }


class AlertService(Service):
    def __init__(self, settings: CloudSettings, engine: Engine) -> None:
        self.settings: AlertSettings = settings.alerts
        self.engine = engine
        self.rules = {r.name: r for r in self.settings.rules}
        self.rule_engine = RuleEngine(self.settings.rules)
        self.mqtt: Any = None
        channels: list[Channel] = []
        channels.extend(WebhookChannel(h) for h in self.settings.webhooks)
        if self.settings.email is not None:
            channels.append(EmailChannel(self.settings.email))
        if self.settings.mqtt:
            from earwitness.shared.mqtt import MqttConnection

            client_id = f"earwitness-alerts-{socket.gethostname()[:20]}-{os.getpid()}"
            self.mqtt = MqttConnection(settings.mqtt, client_id)
            channels.append(MqttChannel(self.mqtt))
        self.channels = {c.name: c for c in channels}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._evaluate_loop, name="alerts-eval", daemon=True),
            threading.Thread(target=self._notify_loop, name="alerts-notify", daemon=True),
        ]
        if self.settings.home_assistant.enabled:
            self._threads.append(
                threading.Thread(target=self._discovery_loop, name="alerts-ha", daemon=True)
            )
        self._discovered: dict[str, bytes] = {}  # topic -> the config last published
        self._wake = threading.Event()  # discovery: publish now (reconnected, stopping)
        if self.mqtt is not None:
            self.mqtt.on_connect = self._on_connect
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="alerts-send")
        self.cursor = 0
        self.decisions = 0
        self.sent = 0
        self.failed = 0
        self.error: str | None = None
        self._rules_seen: str | None = None  # the API's rules as last read

    def channels_for(self, rule: Rule) -> list[str]:
        names = []
        for name, channel in self.channels.items():
            if isinstance(channel, WebhookChannel):
                only = channel.hook.rules
            elif isinstance(channel, EmailChannel):
                only = channel.email.rules
            else:
                only = []
            if not only or rule.name in only:
                names.append(name)
        return names

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self.mqtt is not None:
            self.mqtt.start()
        self.refresh_rules()
        self._rebuild()
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if self.mqtt is not None:
            self.mqtt.stop()

    def health(self) -> Health:
        alive = all(t.is_alive() for t in self._threads)
        mqtt = self.mqtt is None or self.mqtt.connected.is_set()
        return Health(
            alive and mqtt and self.error is None,
            {
                "threads": alive,
                "mqtt": mqtt,
                "cursor": self.cursor,
                "rules": len(self.rules),
                "decisions": self.decisions,
                "sent": self.sent,
                "failed": self.failed,
                "error": self.error,
            },
        )

    # -- evaluation -----------------------------------------------------------------------
    def _warm_up(self) -> None:
        """After a restart: the alerts still open for correlation, and the recent events,
        so evidence that arrives now joins an alert made before the restart."""
        since = datetime.now(UTC) - self.rule_engine.keep
        with transaction(self.engine) as session:
            for alert, evidence in repo.recent_with_evidence(session, since):
                rule = self.rules.get(alert.rule)
                if rule is not None and evidence:
                    self.rule_engine.remember(
                        rule, alert.fingerprint, [detection_of(e) for e in evidence]
                    )
            self.cursor = repo.cursor(session, CURSOR_NAME)
            recent = repo.events_since(session, since, BATCH)
        self._apply([detection_of(e) for e in recent])
        if recent:
            self.cursor = max(self.cursor, max(e.id for e in recent))

    def _rebuild(self) -> None:
        """Back to what the database holds, as after a restart. The rule engine decides
        before the alert is stored: when storing failed (an outage, a deadlock, a Galera
        certification conflict), it has already counted that evidence as used and would
        never decide on it again, and the alert would be lost until a restart."""
        self.rule_engine = RuleEngine(list(self.rules.values()))
        self._warm_up()

    def poll_once(self) -> int:
        with transaction(self.engine) as session:
            rows = repo.events_after(session, max(0, self.cursor - RESCAN_IDS), BATCH)
        if not rows:
            return 0
        self._apply([detection_of(e) for e in rows])
        newest = max(e.id for e in rows)
        if newest > self.cursor:
            self.cursor = newest
            with transaction(self.engine) as session:
                repo.move_cursor(session, CURSOR_NAME, newest)
        return len(rows)

    def _apply(self, detections: list[Detection]) -> None:
        decisions: list[tuple[Decision, Detection]] = []
        for d in detections:
            for decision in self.rule_engine.add(d):
                if decision.evidence:
                    decisions.append((decision, d))
        if not decisions:
            return
        with transaction(self.engine) as session:
            for decision, trigger in decisions:
                rule = decision.rule
                repo.record(
                    session,
                    decision.fingerprint,
                    rule.name,
                    rule.severity,
                    trigger.site,
                    [
                        repo.EvidenceRow(
                            e.key, e.row_id, e.device_id, e.label, e.score, e.at, e.lat, e.lon
                        )
                        for e in decision.evidence
                    ],
                    self.channels_for(rule),
                )
        self.decisions += len(decisions)
        for decision, _ in decisions:
            if decision.new:
                log.warning(
                    "alert %s (%s): %s",
                    decision.fingerprint,
                    decision.rule.severity,
                    ", ".join(f"{e.label}@{e.device_id}" for e in decision.evidence),
                )

    def refresh_rules(self) -> bool:
        """The settings file's rules and those made through the API (a name in both: the
        file's). True when they changed: the rule engine must then be rebuilt, and its
        warm-up runs the new rules over the recent events too. A stored rule this version
        cannot read is reported once and not run; the others still are."""
        with transaction(self.engine) as session:
            rows = [(r.name, r.definition) for r in rules_repo.listing(session)]
        seen = json.dumps(rows, sort_keys=True, default=str)
        if seen == self._rules_seen:
            return False
        self._rules_seen = seen
        rules = {r.name: r for r in self.settings.rules}
        for name, definition in rows:
            if name in rules:
                log.warning(
                    "alerts: rule %r is in the settings file and the API: the file's runs", name
                )
                continue
            try:
                rules[name] = Rule.model_validate({**definition, "name": name})
            except (ValidationError, TypeError) as exc:
                log.error("alerts: rule %r from the API is invalid, not run: %s", name, exc)
        changed = rules != self.rules
        self.rules = rules
        if changed:
            log.info("alerts: running %d rules: %s", len(rules), ", ".join(sorted(rules)))
        return changed

    def _evaluate_loop(self) -> None:
        stale = False  # the rule engine may hold decisions the database never stored
        reloaded = time.monotonic()
        while not self._stop.is_set():
            try:
                if time.monotonic() - reloaded >= RULES_RELOAD_S:
                    reloaded = time.monotonic()
                    stale = self.refresh_rules() or stale  # a new engine needs warming up
                if stale:
                    self._rebuild()
                    stale = False
                busy = self.poll_once() >= BATCH
                self.error = None
            except Exception as exc:  # a database outage: report, keep trying
                self.error = f"evaluate: {type(exc).__name__}: {exc}"[:500]
                log.warning("alerts: %s", self.error)
                busy = False
                stale = True
            if not busy:
                self._stop.wait(self.settings.poll_s)

    # -- Home Assistant discovery -----------------------------------------------------------
    def publish_discovery(self) -> int:
        """Retained configs for every device and every (site, rule); only what changed
        since the last round is published. Returns how many were published."""
        ha = self.settings.home_assistant
        with transaction(self.engine) as session:
            known = [
                homeassistant.DeviceInfo(d.site, d.id, d.name, d.model_id, d.software_version)
                for d in device_repo.list_all(session)
            ]
        configs: list[tuple[str, dict[str, Any]]] = []
        for d in known:
            configs.extend(homeassistant.device_configs(ha.prefix, d))
        for site in sorted({d.site for d in known}):
            for rule in list(self.rules.values()):  # the evaluator may replace the dict
                if not rule.sites or site in rule.sites:
                    configs.append(homeassistant.alert_config(ha.prefix, site, rule.name))
        published = 0
        for name, payload in configs:
            body = homeassistant.encode(payload)
            if self._discovered.get(name) == body:
                continue
            info = self.mqtt.publish(name, body, qos=1, retain=True)
            info.wait_for_publish(5)
            if info.is_published():
                self._discovered[name] = body
                published += 1
        return published

    def _on_connect(self, _connection: Any) -> None:
        # A broker that restarted without persistence lost the retained configs.
        self._discovered.clear()
        self._wake.set()

    def _discovery_loop(self) -> None:
        while not self._stop.is_set():
            if self.mqtt.connected.is_set():
                try:
                    self.publish_discovery()
                except Exception as exc:
                    log.warning("alerts: Home Assistant discovery failed: %s", exc)
            self._wake.wait(self.settings.home_assistant.refresh_s)
            self._wake.clear()

    # -- notification ---------------------------------------------------------------------
    def _notify_loop(self) -> None:
        while not self._stop.is_set():
            try:
                with transaction(self.engine) as session:
                    due = repo.claim_due(session, LEASE_S, SENDERS * 4)
            except Exception as exc:
                log.warning("alerts: cannot read notifications: %s", exc)
                due = []
            futures = [
                self._pool.submit(self._send, n.id, n.alert_id, n.channel, n.attempts) for n in due
            ]
            for f in futures:
                f.result()
            if not due:
                self._stop.wait(0.1)

    def _send(self, notification_id: int, alert_id: int, channel_name: str, attempts: int) -> None:
        channel = self.channels.get(channel_name)
        try:
            with transaction(self.engine) as session:
                alert = repo.by_id(session, alert_id)
                evidence = repo.evidence_of(session, alert_id)
            if alert is None:
                raise DeliveryError(f"alert {alert_id} no longer exists")
            if channel is None:
                raise DeliveryError(f"channel {channel_name!r} is no longer configured")
            channel.send(payload_of(alert, evidence), f"{alert.fingerprint}/{channel_name}")
        except Exception as exc:
            self.failed += 1
            when = retry_at(attempts, self.settings)
            log.warning(
                "alerts: %s for alert %s failed (attempt %s%s): %s",
                channel_name,
                alert_id,
                attempts,
                "" if when else ", giving up",
                exc,
            )
            with transaction(self.engine) as session:
                repo.mark_failed(session, notification_id, str(exc), when)
            return
        self.sent += 1
        with transaction(self.engine) as session:
            repo.mark_sent(session, notification_id)
