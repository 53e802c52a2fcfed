"""MQTT topic layout: ``earwitness/v1/<site>/<device>/<kind>``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX = "earwitness"
VERSION = "v1"
ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
"""Site and device ids: safe in topics (no '/', '+', '#'), file names and URLs."""
_ID_RE = re.compile(rf"^{ID_PATTERN}$")


class Kind(StrEnum):
    """Device -> cloud message kinds."""

    INFERENCE = "inference"
    EVENT = "event"
    CLIP = "clip"
    STATUS = "status"
    HEARTBEAT = "heartbeat"


class Downlink(StrEnum):
    """Cloud -> device topics."""

    ACK = "ack"
    CONFIG = "config"


class TopicError(ValueError):
    pass


ALERTS = "alerts"
"""``earwitness/v1/alerts/<site>/<rule>``: cloud alerts share the tree, so no site may be
called ``alerts`` (its device topics would collide with them)."""
RESERVED_SITES = frozenset({ALERTS})


def alert_topic(site: str, rule: str) -> str:
    return f"{PREFIX}/{VERSION}/{ALERTS}/{site}/{rule}"


def is_alert_topic(name: str) -> bool:
    return name.startswith(f"{PREFIX}/{VERSION}/{ALERTS}/")


@dataclass(frozen=True)
class Topic:
    site: str
    device: str
    kind: str

    def __str__(self) -> str:
        return f"{PREFIX}/{VERSION}/{self.site}/{self.device}/{self.kind}"


def valid_id(value: str) -> bool:
    return bool(_ID_RE.match(value))


def topic(site: str, device: str, kind: Kind | Downlink) -> str:
    for name, value in (("site", site), ("device", device)):
        if not valid_id(value):
            raise TopicError(f"invalid {name} id {value!r}: use 1-64 of A-Z a-z 0-9 _ . -")
    if site in RESERVED_SITES:
        raise TopicError(f"site id {site!r} is reserved (alert topics use it)")
    return str(Topic(site, device, str(kind)))


def parse(name: str) -> Topic:
    parts = name.split("/")
    if len(parts) != 5 or parts[0] != PREFIX:
        raise TopicError(f"not an Earwitness topic: {name!r}")
    if parts[1] != VERSION:
        raise TopicError(f"unsupported topic version {parts[1]!r} in {name!r}")
    _, _, site, device, kind = parts
    if not valid_id(site) or not valid_id(device):
        raise TopicError(f"invalid site or device id in topic {name!r}")
    return Topic(site, device, kind)


def device_filter(site: str = "+", device: str = "+") -> str:
    """Every topic of the matched devices. It also matches the downlink kinds (ack,
    config), which ingest ignores; a per-kind filter would instead hide messages on
    unknown kinds, which belong in the dead-letter table."""
    return f"{PREFIX}/{VERSION}/{site}/{device}/+"


def is_downlink(kind: str) -> bool:
    return kind in Downlink.__members__.values()


def shared_subscription(group: str, topic_filter: str) -> str:
    return f"$share/{group}/{topic_filter}"
