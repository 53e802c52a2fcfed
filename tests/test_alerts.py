"""The alert service against the real things: device events through real Mosquitto and
ingest into MariaDB, alerts to a real HTTP webhook, a real SMTP server and MQTT."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from earwitness.cloud.alerts.service import AlertService
from earwitness.cloud.db.engine import make_engine, transaction
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.models import Alert, AlertEvidence, Event, Notification
from earwitness.cloud.db.models import Device as Device_
from earwitness.cloud.settings import CloudSettings
from earwitness.shared.messages import EventMessage, encode
from earwitness.shared.topics import Kind
from tests.alert_helpers import (
    AlertSubscriber,
    SmtpReceiver,
    WebhookReceiver,
    alert_settings,
)
from tests.factories import T0, Device
from tests.ingest_helpers import Publisher, ingest_settings, running_ingest, wait_for
from tests.services import MQTT_HOST, MQTT_PORT, mariadb_database, unique

pytestmark = pytest.mark.mqtt
M_PER_DEG_LAT = 111_195.0


def event(dev: Device, seq: int, label: str, seconds: float, score: float = 0.9) -> bytes:
    return encode(
        EventMessage(
            **dev._base(seq),  # type: ignore[arg-type]
            event_id=f"event-{dev.device}-{seq:04d}",
            phase="start",
            label=label,
            group=None,
            started_at=T0 + timedelta(seconds=seconds),
            duration_s=1.0,
            peak_score=score,
            windows=2,
            peak_dbfs=-10.0,
            location=dev.location,
        )
    )


@dataclass
class Stack:
    url: str
    engine: Engine
    site: str
    webhook: WebhookReceiver
    smtp: SmtpReceiver
    alerts_topic: AlertSubscriber
    publisher: Publisher

    def settings(self, **overrides: Any) -> CloudSettings:
        return CloudSettings(
            database_url=self.url,
            mqtt={"host": MQTT_HOST, "port": MQTT_PORT},
            alerts=alert_settings(self.webhook, self.smtp, **overrides),
        )

    def device(self, name: str, north_m: float = 0.0) -> Device:
        return Device(self.site, name, location=(48.2082 + north_m / M_PER_DEG_LAT, 16.3738))

    def send(self, dev: Device, seq: int, label: str, seconds: float) -> None:
        self.publisher.publish(dev.topic(Kind.EVENT), event(dev, seq, label, seconds))

    def stored_events(self) -> int:
        with transaction(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(Event)) or 0)

    def count(self, model: Any) -> int:
        with transaction(self.engine) as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    site = unique("s")
    webhook = WebhookReceiver()
    webhook.start()
    smtp = SmtpReceiver()
    subscriber = AlertSubscriber(site)
    publisher = Publisher()
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        with running_ingest(ingest_settings(url, site), tmp_path / "clips"):
            yield Stack(url, engine, site, webhook, smtp, subscriber, publisher)
        engine.dispose()
    publisher.close()
    subscriber.close()
    smtp.stop()
    webhook.stop()


def test_distress_makes_one_alert_on_every_channel_even_with_two_replicas(stack: Stack) -> None:
    dev = stack.device("dev1")
    services = [AlertService(stack.settings(), stack.engine) for _ in range(2)]  # replicas
    for s in services:
        s.start()
    try:
        stack.send(dev, 0, "glass_break", 0)
        stack.send(dev, 1, "scream", 3)
        stack.send(dev, 2, "dog", 4)  # a label no rule names
        wait_for(lambda: len(stack.webhook.requests) >= 1, what="webhook")
        wait_for(lambda: stack.smtp.messages and stack.alerts_topic.messages, what="e-mail, MQTT")
        time.sleep(1.5)  # room for a duplicate to show up
    finally:
        for s in services:
            s.stop()
    assert stack.count(Alert) == 1 and stack.count(AlertEvidence) == 2
    assert len(stack.webhook.requests) == 1 and stack.webhook.signatures_valid()
    body = stack.webhook.payloads()[0]
    assert body["alert"]["rule"] == "distress" and body["alert"]["severity"] == "critical"
    assert sorted(e["label"] for e in body["evidence"]) == ["glass_break", "scream"]
    assert len(stack.smtp.messages) == 1
    assert "distress" in str(stack.smtp.messages[0]["Subject"])
    assert [t for t, _p in stack.alerts_topic.messages] == [
        f"earwitness/v1/alerts/{stack.site}/distress"
    ]
    with transaction(stack.engine) as s:
        statuses = s.execute(select(Notification.channel, Notification.status)).all()
    assert sorted(statuses) == [("email", "sent"), ("mqtt", "sent"), ("webhook:ops", "sent")]

    # A restart reads the same events again: nothing new is made or sent.
    again = AlertService(stack.settings(), stack.engine)
    again.start()
    time.sleep(1.0)
    again.stop()
    assert stack.count(Alert) == 1 and len(stack.webhook.requests) == 1


@pytest.mark.parametrize(
    ("north_m", "seconds", "alerts"),
    [(100, 3, 1), (2000, 3, 0), (0, 60, 0)],
    ids=["two-devices-100m", "two-devices-2km", "one-device-60s-apart"],
)
def test_alert_only_when_close_in_time_and_place(
    stack: Stack, north_m: float, seconds: float, alerts: int
) -> None:
    a, b = stack.device("a"), stack.device("b", north_m=north_m)
    service = AlertService(stack.settings(email=None), stack.engine)
    service.start()
    try:
        stack.send(a, 0, "glass_break", 0)
        stack.send(b if north_m else a, 1, "scream", seconds)
        wait_for(lambda: stack.stored_events() == 2, what="events stored")
        wait_for(lambda: service.cursor > 0, what="events read by the alert service")
        time.sleep(1.0)
    finally:
        service.stop()
    assert stack.count(Alert) == alerts
    assert len(stack.webhook.requests) == alerts


def test_an_alert_the_database_refused_is_stored_when_it_is_back(stack: Stack) -> None:
    """The rule engine decides before the alert is stored. The alerts table is made to
    vanish (renamed away on the real server) just as the evidence arrives, so storing the
    decision fails; when it is back, the alert is made once and sent once (before the fix
    the engine had counted the evidence as used and the alert was lost until a restart)."""
    service = AlertService(stack.settings(email=None, mqtt=False), stack.engine)
    service.start()
    with stack.engine.connect() as conn:
        conn.exec_driver_sql("RENAME TABLE alerts TO alerts_away")
    try:
        dev = stack.device("dev1")
        stack.send(dev, 0, "glass_break", 0)
        stack.send(dev, 1, "scream", 2)
        wait_for(lambda: service.error is not None, what="storing the alert failed")
        assert "alerts" in str(service.error), service.error  # the operator sees what
        time.sleep(1.0)  # more polls while the table is away
    finally:
        with stack.engine.connect() as conn:
            conn.exec_driver_sql("RENAME TABLE alerts_away TO alerts")
    try:
        wait_for(lambda: len(stack.webhook.requests) >= 1, what="the alert sent after all")
        wait_for(lambda: service.error is None, what="the service healthy again")
        time.sleep(1.5)  # room for a duplicate
    finally:
        service.stop()
    assert stack.count(Alert) == 1 and stack.count(AlertEvidence) == 2
    assert len(stack.webhook.requests) == 1 and stack.webhook.signatures_valid()


def test_webhook_down_for_30_s_is_delivered_once_after_it_returns(stack: Stack) -> None:
    stack.webhook.stop()
    service = AlertService(stack.settings(email=None, mqtt=False, max_attempts=40), stack.engine)
    service.start()
    try:
        dev = stack.device("dev1")
        stack.send(dev, 0, "glass_break", 0)
        stack.send(dev, 1, "scream", 2)
        wait_for(lambda: service.failed >= 2, what="failed attempts while the receiver is down")
        time.sleep(30)
        stack.webhook.start()
        wait_for(lambda: len(stack.webhook.requests) >= 1, timeout=10, what="delivery")
        time.sleep(3)  # a duplicate would arrive within one more backoff period
    finally:
        service.stop()
    assert len(stack.webhook.requests) == 1 and stack.webhook.signatures_valid()
    with transaction(stack.engine) as s:
        n = s.scalars(select(Notification)).one()
    assert n.status == "sent" and n.attempts >= 3


def test_replayed_scream_and_glass_on_a_device_with_a_head_raise_one_alert(
    stack: Stack, distress_head: tuple[Path, Any], patch_model: Any, tmp_path: Path
) -> None:
    """The whole path: held-out recordings -> edge agent running a trained head -> MQTT ->
    ingest -> MariaDB -> alert service -> signed webhook."""
    import numpy as np

    from earwitness.edge.agent import EdgeAgent
    from tests.edge_helpers import ArraySource, noise, run_until_finished
    from tests.heads_helpers import head_trigger_config
    from tests.test_heads_edge import _detected_clip

    head_path, split = distress_head
    scream = _detected_clip(patch_model, head_path, split, "scream")
    glass = _detected_clip(patch_model, head_path, split, "glass_break")
    wave = np.concatenate([noise(1.0, 0.002), glass, noise(3.0, 0.002, 1), scream, noise(2, 0.002)])
    service = AlertService(stack.settings(email=None), stack.engine)
    service.start()
    cfg = head_trigger_config(tmp_path, stack.site, head_path)
    agent = EdgeAgent(cfg, source=ArraySource(wave))
    agent.start()
    try:
        run_until_finished(agent)
        wait_for(agent.drained, timeout=30, what="events stored")
        wait_for(lambda: len(stack.webhook.requests) >= 1, what="distress webhook")
        time.sleep(1.5)
    finally:
        agent.stop()
        service.stop()
    assert stack.count(Alert) == 1
    assert len(stack.webhook.requests) == 1 and stack.webhook.signatures_valid()
    labels = {e["label"] for e in stack.webhook.payloads()[0]["evidence"]}
    assert labels == {"glass_break", "scream"}


def test_home_assistant_discovery_configs_are_retained_and_point_at_real_topics(
    stack: Stack,
) -> None:
    import json

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from earwitness.shared.topics import alert_topic, topic

    prefix = unique("ha")
    a, b = stack.device("a"), stack.device("b", north_m=50)
    for dev in (a, b):
        stack.publisher.publish(dev.topic(Kind.HEARTBEAT), encode(dev.heartbeat(0)))
    wait_for(lambda: stack.count(Device_) == 2, what="devices stored")
    settings = stack.settings(email=None, home_assistant={"enabled": True, "prefix": prefix})
    service = AlertService(settings, stack.engine)
    service.start()
    try:
        wait_for(lambda: len(service._discovered) == 7, what="discovery published")
        assert service.publish_discovery() == 0  # nothing changed: nothing sent again
    finally:
        service.stop()

    seen: dict[str, dict[str, Any]] = {}
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("hasub"))
    sub.on_message = lambda c, u, m: m.payload and seen.__setitem__(m.topic, json.loads(m.payload))
    sub.connect(MQTT_HOST, MQTT_PORT)
    sub.subscribe(f"{prefix}/#", qos=1)
    sub.loop_start()
    try:
        wait_for(lambda: len(seen) == 7, what="retained configs read back")
    finally:
        for name in seen:  # leave nothing retained on the shared broker
            sub.publish(name, b"", qos=1, retain=True).wait_for_publish(5)
        sub.loop_stop()
        sub.disconnect()
    node = f"earwitness_{a.site}_a"
    online = seen[f"{prefix}/binary_sensor/{node}/online/config"]
    assert online["state_topic"] == topic(a.site, "a", Kind.STATUS)
    assert online["device_class"] == "connectivity"
    level = seen[f"{prefix}/sensor/{node}/sound_level/config"]
    assert level["state_topic"] == topic(a.site, "a", Kind.HEARTBEAT)
    assert level["unit_of_measurement"] == "dBFS" and "leq_dbfs" in level["value_template"]
    last = seen[f"{prefix}/sensor/{node}/last_detection/config"]
    assert last["state_topic"] == topic(a.site, "a", Kind.EVENT)
    alert = seen[f"{prefix}/event/earwitness_alerts_{a.site}/distress/config"]
    assert alert["state_topic"] == alert_topic(a.site, "distress")
    assert alert["event_types"] == ["info", "warning", "critical"]
    ids = [c["unique_id"] for c in seen.values()]
    assert len(set(ids)) == len(ids) == 7  # Home Assistant keys entities by unique_id
    for config in seen.values():
        assert config["device"]["identifiers"] and config["name"]


def test_a_rule_saved_through_the_api_runs_without_a_restart_and_stops_when_deleted(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from earwitness.cloud.alerts import service as service_module
    from earwitness.cloud.db.repo import alert_rules

    monkeypatch.setattr(service_module, "RULES_RELOAD_S", 0.2)
    service = AlertService(stack.settings(email=None, mqtt=False), stack.engine)
    service.start()
    try:
        a, b = stack.device("a"), stack.device("b", north_m=5000)
        stack.send(a, 0, "Gunshot, gunfire", 0)  # no rule names it yet
        wait_for(lambda: stack.stored_events() == 1, what="event stored")
        wait_for(lambda: service.cursor > 0, what="read by the alert service")
        assert stack.count(Alert) == 0
        with transaction(stack.engine) as s:
            alert_rules.put(s, "gunshot", {"any_of": [{"label": "Gunshot, gunfire"}]}, "test")
        wait_for(lambda: "gunshot" in service.rules, what="the new rule loaded")
        # The new rule also looks at the recent events (the engine's warm-up): one alert
        # for the shot just before, and one for a shot after.
        stack.send(b, 0, "Gunshot, gunfire", 1)
        wait_for(lambda: stack.count(Alert) == 2, what="an alert per shot")
        with transaction(stack.engine) as s:
            alert_rules.remove(s, "gunshot")
        wait_for(lambda: "gunshot" not in service.rules, what="the rule dropped")
        c = stack.device("c", north_m=10_000)
        stack.send(c, 0, "Gunshot, gunfire", 2)
        wait_for(lambda: stack.stored_events() == 3, what="the third shot stored")
        time.sleep(1.0)
        assert service.error is None, service.error
    finally:
        service.stop()
    assert stack.count(Alert) == 2
    with transaction(stack.engine) as s:
        rules = {a.device_id: a.rule for a in s.scalars(select(Alert))}
    assert rules == {"a": "gunshot", "b": "gunshot"}
