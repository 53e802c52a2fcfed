"""Alert rules and notification channels, as settings (`alerts:` in the cloud YAML).

Two kinds of rule:

- ``all_of``: a correlation. Every listed class is detected (score at or above its
  ``min_score``) within ``within_s`` seconds of each other, at devices at most
  ``within_m`` metres apart (the same device always qualifies; a device without a
  location only correlates with itself). The distress rule: glass breaking and a scream.
- ``any_of``: a single-class rule, at most one alert per device per ``rate_limit_s``.

Labels are what devices report: a custom head's class (``scream``), an AudioSet label
(``Gunshot, gunfire``) or a label group (``alarm``) of a device-side event.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from earwitness.shared.config import StrictModel

RULE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # becomes an MQTT topic level


class Evidence(StrictModel):
    label: str = Field(min_length=1, max_length=128, description="class, label or group")
    min_score: float = Field(0.5, ge=0, le=1, description="weakest detection that counts")


SiteName = Annotated[str, Field(min_length=1, max_length=64)]


class RuleBody(StrictModel):
    """A rule without its name: what ``PUT /api/v1/alert-rules/{name}`` takes."""

    severity: Literal["info", "warning", "critical"] = "warning"
    all_of: list[Evidence] | None = Field(
        None, min_length=2, max_length=8, description="correlation: every class, close together"
    )
    any_of: list[Evidence] | None = Field(
        None, min_length=1, max_length=32, description="single class: any one of these"
    )
    within_s: float = Field(10.0, gt=0, le=3600, description="correlation time window")
    within_m: float = Field(150.0, ge=0, le=100_000, description="correlation distance")
    rate_limit_s: float = Field(
        300.0, ge=0, le=86_400, description="single-class rules: one alert per device per this"
    )
    sites: list[SiteName] = Field(
        default_factory=list, max_length=100, description="only these sites (empty: all)"
    )

    @model_validator(mode="after")
    def _one_kind(self) -> RuleBody:
        if (self.all_of is None) == (self.any_of is None):
            raise ValueError("a rule has exactly one of all_of (correlation) or any_of")
        if self.all_of is not None:
            labels = [e.label for e in self.all_of]
            if len(set(labels)) != len(labels):
                raise ValueError(f"all_of lists a label twice: {labels}")
        return self


class Rule(RuleBody):
    name: str = Field(description="unique; lower-case letters, digits, _ and -")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, value: str) -> str:
        if not RULE_NAME.match(value):
            raise ValueError("use 1-64 lower-case letters, digits, _ or - (an MQTT topic level)")
        return value

    @property
    def evidence(self) -> list[Evidence]:
        return self.all_of or self.any_of or []

    @property
    def correlation(self) -> bool:
        return self.all_of is not None


class Webhook(StrictModel):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    url: str = Field(pattern=r"^https?://", max_length=2000)
    secret: SecretStr = Field(description="HMAC-SHA256 key; receivers check the signature")
    rules: list[str] = Field(default_factory=list, description="only these rules (empty: all)")


class Email(StrictModel):
    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    username: str | None = None
    password: SecretStr | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    to: list[str] = Field(min_length=1)
    rules: list[str] = Field(default_factory=list, description="only these rules (empty: all)")


class HomeAssistant(StrictModel):
    """MQTT discovery configs for Home Assistant (cloud/alerts/homeassistant.py)."""

    enabled: bool = Field(False, description="publish retained discovery configs")
    prefix: str = Field(
        "homeassistant",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Home Assistant's discovery prefix",
    )
    refresh_s: float = Field(60.0, ge=1, le=86_400, description="how often new devices are found")


class AlertSettings(StrictModel):
    rules: list[Rule] = Field(default_factory=list)
    poll_s: float = Field(0.25, gt=0, le=60, description="how often new detections are read")
    webhooks: list[Webhook] = Field(default_factory=list)
    email: Email | None = None
    mqtt: bool = Field(True, description="publish alerts on earwitness/v1/alerts/<site>/<rule>")
    home_assistant: HomeAssistant = Field(default_factory=HomeAssistant)
    max_attempts: int = Field(
        12, ge=1, le=100, description="then the notification is dead (12: about 20 minutes)"
    )
    retry_max_s: float = Field(300.0, ge=1, description="longest wait between two attempts")

    @model_validator(mode="after")
    def _names_unique(self) -> AlertSettings:
        for kind, names in (
            ("rule", [r.name for r in self.rules]),
            ("webhook", [w.name for w in self.webhooks]),
        ):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{kind} names must be unique: {dupes}")
        if self.home_assistant.enabled and not self.mqtt:
            raise ValueError("home_assistant needs mqtt: true (discovery is published there)")
        known = {r.name for r in self.rules}
        for w in self.webhooks:
            unknown = sorted(set(w.rules) - known)
            if unknown:
                raise ValueError(f"webhook {w.name}: unknown rules {unknown}")
        return self
