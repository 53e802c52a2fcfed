"""Home Assistant MQTT discovery: each device, and each site's alert rules, as entities.

Home Assistant reads retained configs under ``<prefix>/<component>/<node_id>/<object_id>/
config`` (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery) and then
subscribes to the state topics they name. The entities read the topics devices and the
alert service already publish, so nothing is sent twice:

- ``binary_sensor`` *online* (device class ``connectivity``) from the retained ``status``;
- ``sensor`` *sound level* (Leq, dBFS) from ``heartbeat``;
- ``sensor`` *last detection* from ``event`` (the label of the newest event);
- ``event`` *<rule>* per site and rule from ``earwitness/v1/alerts/<site>/<rule>``, whose
  ``event_type`` is the alert's severity.

Device strings (names, ids) only appear as JSON values, never in topics: topics are built
from ids that already match ``ID_PATTERN``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from earwitness.shared import __version__
from earwitness.shared.topics import Kind, alert_topic, topic

ORIGIN = {"name": "Earwitness", "sw_version": __version__}
SEVERITIES = ["info", "warning", "critical"]


@dataclass(frozen=True)
class DeviceInfo:
    site: str
    device_id: str
    name: str | None
    model: str | None
    version: str | None


def _node(site: str, device_id: str) -> str:
    # node_id allows [a-zA-Z0-9_-]; our ids may also hold dots.
    return f"earwitness_{site}_{device_id}".replace(".", "_")


def device_configs(prefix: str, d: DeviceInfo) -> list[tuple[str, dict[str, Any]]]:
    node = _node(d.site, d.device_id)
    device = {
        "identifiers": [f"earwitness:{d.site}:{d.device_id}"],
        "name": d.name or d.device_id,
        "manufacturer": "Earwitness",
        "model": d.model or "YAMNet edge agent",
        "sw_version": d.version,
        "suggested_area": d.site,
    }
    status = topic(d.site, d.device_id, Kind.STATUS)
    availability = {
        "availability_topic": status,
        "availability_template": "{{ 'online' if value_json.state == 'online' else 'offline' }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    common = {"device": device, "origin": ORIGIN}
    return [
        (
            f"{prefix}/binary_sensor/{node}/online/config",
            {
                **common,
                "name": "Online",
                "unique_id": f"{node}_online",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": status,
                "value_template": "{{ 'ON' if value_json.state == 'online' else 'OFF' }}",
            },
        ),
        (
            f"{prefix}/sensor/{node}/sound_level/config",
            {
                **common,
                **availability,
                "name": "Sound level",
                "unique_id": f"{node}_leq",
                "state_topic": topic(d.site, d.device_id, Kind.HEARTBEAT),
                "value_template": "{{ value_json.leq_dbfs }}",
                "unit_of_measurement": "dBFS",
                "state_class": "measurement",
                "suggested_display_precision": 1,
                "icon": "mdi:volume-high",
            },
        ),
        (
            f"{prefix}/sensor/{node}/last_detection/config",
            {
                **common,
                **availability,
                "name": "Last detection",
                "unique_id": f"{node}_last_detection",
                "state_topic": topic(d.site, d.device_id, Kind.EVENT),
                "value_template": "{{ value_json.label }}",
                "json_attributes_topic": topic(d.site, d.device_id, Kind.EVENT),
                "json_attributes_template": (
                    "{{ {'score': value_json.peak_score, 'phase': value_json.phase,"
                    " 'started_at': value_json.started_at} | tojson }}"
                ),
                "icon": "mdi:ear-hearing",
            },
        ),
    ]


def alert_config(prefix: str, site: str, rule: str) -> tuple[str, dict[str, Any]]:
    node = f"earwitness_alerts_{site}".replace(".", "_")
    return (
        f"{prefix}/event/{node}/{rule.replace('-', '_')}/config",
        {
            "name": f"Alert {rule}",
            "unique_id": f"{node}_{rule}",
            "state_topic": alert_topic(site, rule),
            "event_types": SEVERITIES,
            "value_template": (
                "{{ {'event_type': value_json.alert.severity, 'rule': value_json.alert.rule,"
                " 'device': value_json.alert.device, 'labels': value_json.alert.labels,"
                " 'alert_id': value_json.alert.id} | tojson }}"
            ),
            "icon": "mdi:alarm-light",
            "device": {
                "identifiers": [f"earwitness:alerts:{site}"],
                "name": f"Earwitness alerts {site}",
                "manufacturer": "Earwitness",
                "model": "alert service",
            },
            "origin": ORIGIN,
        },
    )


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in payload.items() if v is not None}).encode()
