"""The rule engine, in memory and deterministic: detections in, alert decisions out.

It keeps the recent detections of every label a rule names (long enough for the widest
correlation window plus late arrivals) and the alerts it has opened recently. Given the
same detections in the same order it makes the same decisions, which is what makes
alerts idempotent across restarts and replicas: the first detection that completes a
rule names the alert (its fingerprint), and later evidence of the same incident (same
rule, overlapping in time and place) joins that alert instead of opening another.
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from earwitness.cloud.alerts.rules import Rule

LATE_S = 120.0  # detections may arrive this late (a device's outbox after a short outage)
EARTH_RADIUS_M = 6_371_000.0
PRUNE_EVERY_S = 1.0  # forget old detections this often (of detection time), not on every add
MIN_CELL_M = 50.0  # cells of the place index are never smaller (rules with within_m 0)

Cell = tuple[int, int, int] | tuple[str, str]


@dataclass(frozen=True)
class Detection:
    """One piece of evidence: a device-side event (start, update or end)."""

    key: str  # device/event_id: one incident on one device, whatever its phase rows
    row_id: int  # the events row it was read from
    device_id: str
    site: str
    label: str
    score: float
    at: datetime
    lat: float | None
    lon: float | None


@dataclass
class Decision:
    """Open a new alert (``new``) or add evidence to an open one."""

    rule: Rule
    fingerprint: str
    evidence: list[Detection]
    new: bool


@dataclass
class _Open:
    rule: Rule
    fingerprint: str
    first_at: datetime
    last_at: datetime
    order: int  # creation order: the first matching alert wins, as in a list
    places: set[Place] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)


Place = tuple[str, float | None, float | None]  # device, lat, lon


def cell_of(place: Place, cell_m: float) -> Cell:
    """The grid cell of a place; a place without a location is its device."""
    device, lat_deg, lon_deg = place
    if lat_deg is None or lon_deg is None:
        return ("device", device)
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    x = EARTH_RADIUS_M * math.cos(lat) * math.cos(lon)
    y = EARTH_RADIUS_M * math.cos(lat) * math.sin(lon)
    z = EARTH_RADIUS_M * math.sin(lat)
    return (math.floor(x / cell_m), math.floor(y / cell_m), math.floor(z / cell_m))


def neighbourhood(home: Cell) -> list[Cell]:
    """The cell and the 26 around it (a device's own cell has no neighbours)."""
    if isinstance(home[0], str):
        return [home]
    cx, cy, cz = home
    return [(cx + i, cy + j, cz + k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]


def place_of(d: Detection) -> Place:
    return (d.device_id, d.lat, d.lon)


class _Recent:
    """The recent detections of one label, by place and time, so a new detection is
    compared only with what is near it: a fleet of thousands costs what a street does.

    Places are cells of a grid on the earth's 3-D coordinates, at least as wide as the
    widest correlation distance: two devices that close (their chord is shorter than
    their distance on the ground) are in the same or adjacent cells, with no special
    case at the poles or the antimeridian. A detection without a location can only
    correlate with its own device, so its cell is the device. Each cell's list is
    sorted by time, so the window is found by bisection."""

    def __init__(self, cell_m: float) -> None:
        self.cell_m = cell_m
        self.cells: dict[Cell, list[tuple[datetime, int, int, Detection]]] = {}
        self._order = itertools.count()  # ties in time and row: insertion order

    def add(self, d: Detection) -> None:
        entry = (d.at, d.row_id, next(self._order), d)
        bisect.insort(self.cells.setdefault(cell_of(place_of(d), self.cell_m), []), entry)

    def near(self, d: Detection, window: timedelta) -> list[Detection]:
        """Detections within ``window`` of ``d``'s time, in its own and adjacent cells."""
        neighbours = neighbourhood(cell_of(place_of(d), self.cell_m))
        lo, hi = d.at - window, d.at + window
        found = []
        for c in neighbours:
            entries = self.cells.get(c)
            if not entries:
                continue
            start = bisect.bisect_left(entries, lo, key=lambda e: e[0])
            for e in entries[start:]:
                if e[0] > hi:
                    break
                found.append(e[3])
        return found

    def forget_before(self, cutoff: datetime) -> list[str]:
        """Drops what is older than ``cutoff``; returns the keys dropped."""
        dropped: list[str] = []
        for c in list(self.cells):
            entries = self.cells[c]
            end = bisect.bisect_left(entries, cutoff, key=lambda e: e[0])
            if end:
                dropped.extend(e[3].key for e in entries[:end])
                del entries[:end]
            if not entries:
                del self.cells[c]
        return dropped


def distance_m(a: Detection | tuple[str, float | None, float | None], b: Detection) -> float:
    """Metres between two detections' devices; 0 on the same device; infinite when
    either has no location (it can only correlate with itself)."""
    device, lat, lon = (a.device_id, a.lat, a.lon) if isinstance(a, Detection) else a
    if device == b.device_id:
        return 0.0
    if lat is None or lon is None or b.lat is None or b.lon is None:
        return math.inf
    p1, p2 = math.radians(lat), math.radians(b.lat)
    dp, dl = p2 - p1, math.radians(b.lon - lon)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


class RuleEngine:
    def __init__(self, rules: list[Rule]) -> None:
        self.rules = rules
        self._labels = {e.label for r in rules for e in r.evidence}
        horizon = max([r.within_s for r in rules] + [r.rate_limit_s for r in rules] + [0.0])
        self.keep = timedelta(seconds=horizon + LATE_S)
        cell_m = max([r.within_m for r in rules if r.correlation] + [MIN_CELL_M])
        self._recent = {label: _Recent(cell_m) for label in self._labels}
        self._pruned: datetime | None = None
        self._best: dict[str, float] = {}  # key -> best score seen (phases of one event)
        self._cell_m = cell_m
        # Open alerts of each rule, by fingerprint and by the cells and devices of their
        # places, so deciding where evidence belongs looks only at alerts nearby.
        self._open: dict[str, dict[str, _Open]] = {r.name: {} for r in rules}
        self._open_at: dict[str, dict[Cell, set[str]]] = {r.name: {} for r in rules}
        self._opened = itertools.count()
        self._newest: datetime | None = None

    def remember(self, rule: Rule, fingerprint: str, evidence: list[Detection]) -> None:
        """An alert that already exists (read back after a restart) joins the open ones."""
        self._track(rule, fingerprint, evidence)

    def add(self, d: Detection) -> list[Decision]:
        if d.label not in self._labels:
            return []
        if self._best.get(d.key, -1.0) >= d.score:
            return []  # a later phase of an event adds nothing new
        self._best[d.key] = d.score
        self._newest = d.at if self._newest is None else max(self._newest, d.at)
        if self._pruned is None or (self._newest - self._pruned).total_seconds() >= PRUNE_EVERY_S:
            self._prune()
            self._pruned = self._newest
        self._recent[d.label].add(d)
        decisions = []
        for rule in self.rules:
            if rule.sites and d.site not in rule.sites:
                continue
            wanted = next((e for e in rule.evidence if e.label == d.label), None)
            if wanted is None or d.score < wanted.min_score:
                continue
            combo = self._combination(rule, d) if rule.correlation else [d]
            if combo is None:
                continue
            decisions.append(self._decide(rule, combo))
        return decisions

    def _combination(self, rule: Rule, d: Detection) -> list[Detection] | None:
        """``d`` plus, for every other class, the detection closest in time that keeps the
        whole set within the rule's window and distance; None if a class is missing."""
        assert rule.all_of is not None
        chosen = [d]
        window = timedelta(seconds=rule.within_s)
        for ev in rule.all_of:
            if ev.label == d.label:
                continue
            candidates = sorted(
                (
                    c
                    for c in self._recent[ev.label].near(d, window)
                    if c.score >= ev.min_score
                    and (not rule.sites or c.site in rule.sites)
                    and abs(c.at - d.at) <= window
                ),
                key=lambda c: (abs((c.at - d.at).total_seconds()), c.row_id),
            )
            pick = next(
                (
                    c
                    for c in candidates
                    if max(x.at for x in [*chosen, c]) - min(x.at for x in [*chosen, c]) <= window
                    and all(distance_m(x, c) <= rule.within_m for x in chosen)
                ),
                None,
            )
            if pick is None:
                return None
            chosen.append(pick)
        return chosen

    def _decide(self, rule: Rule, combo: list[Detection]) -> Decision:
        start = min(c.at for c in combo)
        end = max(c.at for c in combo)
        gap = timedelta(seconds=rule.within_s if rule.correlation else rule.rate_limit_s)
        for alert in self._alerts_near(rule, combo[0]):
            overlaps = start - alert.last_at <= gap and alert.first_at - end <= gap
            near = all(
                min(distance_m(place, c) for place in alert.places) <= rule.within_m
                if rule.correlation
                else any(place[0] == c.device_id for place in alert.places)
                for c in combo
            )
            if overlaps and near:
                fresh = [c for c in combo if c.key not in alert.keys]
                self._track(rule, alert.fingerprint, combo)
                return Decision(rule, alert.fingerprint, fresh, new=False)
        anchor = min(combo, key=lambda c: (c.at, c.row_id))
        fingerprint = f"{rule.name}:{anchor.key}"
        self._track(rule, fingerprint, combo)
        return Decision(rule, fingerprint, list(combo), new=True)

    def _track(self, rule: Rule, fingerprint: str, evidence: list[Detection]) -> None:
        alert = self._open[rule.name].get(fingerprint)
        start = min(c.at for c in evidence)
        end = max(c.at for c in evidence)
        if alert is None:
            alert = _Open(rule, fingerprint, start, end, next(self._opened))
            self._open[rule.name][fingerprint] = alert
        alert.first_at = min(alert.first_at, start)
        alert.last_at = max(alert.last_at, end)
        index = self._open_at[rule.name]
        for c in evidence:
            if c.key not in alert.keys:
                alert.keys.add(c.key)
                place = place_of(c)
                if place not in alert.places:
                    alert.places.add(place)
                    for cell in self._cells_of(place):
                        index.setdefault(cell, set()).add(fingerprint)

    def _cells_of(self, place: Place) -> list[Cell]:
        """Where an alert's place is indexed: its cell, and its device (single-class
        rules match by device)."""
        home = cell_of(place, self._cell_m)
        device: Cell = ("device", place[0])
        return [home] if home == device else [home, device]

    def _alerts_near(self, rule: Rule, d: Detection) -> list[_Open]:
        """Open alerts of ``rule`` with a place near ``d`` (or at its device), oldest
        first."""
        index = self._open_at[rule.name]
        cells = neighbourhood(cell_of(place_of(d), self._cell_m)) if rule.correlation else []
        cells.append(("device", d.device_id))
        found: set[str] = set()
        for cell in cells:
            found.update(index.get(cell, ()))
        alerts = self._open[rule.name]
        return sorted((alerts[f] for f in found), key=lambda a: a.order)

    def _prune(self) -> None:
        assert self._newest is not None
        cutoff = self._newest - self.keep
        for recent in self._recent.values():
            for key in recent.forget_before(cutoff):
                self._best.pop(key, None)
        for name, alerts in self._open.items():
            index = self._open_at[name]
            for fingerprint in [f for f, a in alerts.items() if a.last_at < cutoff]:
                for place in alerts.pop(fingerprint).places:
                    for cell in self._cells_of(place):
                        held = index.get(cell)
                        if held is not None:
                            held.discard(fingerprint)
                            if not held:
                                del index[cell]
