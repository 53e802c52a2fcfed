"""The rule engine alone: correlation in time and space, rate limits, idempotency."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from earwitness.cloud.alerts.engine import Detection, RuleEngine, distance_m
from earwitness.cloud.alerts.rules import AlertSettings, Rule

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DISTRESS = Rule(
    name="distress",
    severity="critical",
    all_of=[{"label": "glass_break", "min_score": 0.8}, {"label": "scream", "min_score": 0.7}],
    within_s=10,
    within_m=150,
)
GUNSHOT = Rule(
    name="gunshot", any_of=[{"label": "Gunshot, gunfire", "min_score": 0.5}], rate_limit_s=60
)
LAT, LON = 48.2082, 16.3738
M_PER_DEG_LAT = 111_195.0

_ids = iter(range(1, 10_000))


def at_place(
    label: str, seconds: float, device: str, lat: float, lon: float, score: float = 0.9
) -> Detection:
    row = next(_ids)
    return Detection(
        key=f"{device}/ev{row}",
        row_id=row,
        device_id=device,
        site="s1",
        label=label,
        score=score,
        at=T0 + timedelta(seconds=seconds),
        lat=lat,
        lon=lon,
    )


def det(
    label: str, seconds: float, device: str = "a", score: float = 0.9, north_m: float = 0.0
) -> Detection:
    return at_place(label, seconds, device, LAT + north_m / M_PER_DEG_LAT, LON, score)


def run(engine: RuleEngine, detections: list[Detection]) -> list[tuple[str, bool, int]]:
    return [(d.fingerprint, d.new, len(d.evidence)) for x in detections for d in engine.add(x)]


def test_glass_then_scream_on_one_device_is_one_alert() -> None:
    glass, scream = det("glass_break", 0), det("scream", 3)
    decisions = run(RuleEngine([DISTRESS]), [glass, scream])
    assert decisions == [(f"distress:{glass.key}", True, 2)]


def test_order_of_arrival_does_not_matter() -> None:
    glass, scream = det("glass_break", 0), det("scream", 3)
    assert run(RuleEngine([DISTRESS]), [scream, glass]) == [(f"distress:{glass.key}", True, 2)]


@pytest.mark.parametrize(
    ("north_m", "seconds", "alerts"),
    [(100, 3, 1), (140, 9.5, 1), (2000, 3, 0), (160, 3, 0), (0, 60, 0), (0, 10.5, 0)],
)
def test_correlation_needs_both_time_and_place(north_m: float, seconds: float, alerts: int) -> None:
    decisions = run(
        RuleEngine([DISTRESS]),
        [det("glass_break", 0, "a"), det("scream", seconds, "b", north_m=north_m)],
    )
    assert len(decisions) == alerts


def test_weak_evidence_does_not_count() -> None:
    assert run(RuleEngine([DISTRESS]), [det("glass_break", 0, score=0.79), det("scream", 2)]) == []


def test_more_evidence_joins_the_open_alert_and_repeats_add_nothing() -> None:
    engine = RuleEngine([DISTRESS])
    glass, scream, scream2 = (
        det("glass_break", 0),
        det("scream", 3),
        det("scream", 5, "b", north_m=50),
    )
    first = run(engine, [glass, scream])
    assert run(engine, [glass, scream]) == []  # the same rows read again (a rescan)
    later = engine.add(scream2)
    assert [(d.fingerprint, d.new) for d in later] == [(first[0][0], False)]
    assert [e.key for e in later[0].evidence] == [scream2.key]


def test_a_device_without_location_only_correlates_with_itself() -> None:
    glass = det("glass_break", 0, "a")
    blind = Detection("b/x", 999, "b", "s1", "scream", 0.9, T0 + timedelta(seconds=2), None, None)
    assert run(RuleEngine([DISTRESS]), [glass, blind]) == []
    assert distance_m(glass, blind) == float("inf")


def test_a_restarted_engine_makes_the_same_decisions() -> None:
    stream = [
        det("glass_break", 0),
        det("noise", 1),
        det("scream", 3),
        det("glass_break", 40),
        det("scream", 44),
    ]
    assert run(RuleEngine([DISTRESS]), stream) == run(RuleEngine([DISTRESS]), stream)
    assert len(run(RuleEngine([DISTRESS]), stream)) == 2  # two incidents 40 s apart


def test_single_class_rule_is_rate_limited_per_device() -> None:
    engine = RuleEngine([GUNSHOT])
    shots = [
        det("Gunshot, gunfire", 0, "a"),
        det("Gunshot, gunfire", 10, "a"),
        det("Gunshot, gunfire", 12, "b"),
        det("Gunshot, gunfire", 200, "a"),
    ]
    decisions = run(engine, shots)
    assert [new for _fp, new, _n in decisions] == [True, False, True, True]


def test_settings_refuse_bad_rules() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one of all_of"):
        Rule(name="x", any_of=[{"label": "a"}], all_of=[{"label": "a"}, {"label": "b"}])
    with pytest.raises(ValidationError, match="MQTT topic level"):
        Rule(name="Bad Name", any_of=[{"label": "a"}])
    with pytest.raises(ValidationError, match="unique"):
        AlertSettings(rules=[DISTRESS, DISTRESS])
    with pytest.raises(ValidationError, match="unknown rules"):
        AlertSettings(
            rules=[DISTRESS],
            webhooks=[{"name": "w", "url": "http://x", "secret": "s", "rules": ["nope"]}],
        )


@pytest.mark.parametrize(
    ("lat", "lon", "dlat", "dlon"),
    [
        (0.0, 179.9995, 0.0, 0.001),  # across the antimeridian
        (89.9995, 0.0, 0.0, 180.0),  # across the north pole
        (-33.87, 151.21, 0.0009, 0.0009),  # diagonal, southern hemisphere
        (48.2082, 16.3738, 0.0, -0.0017),  # west
    ],
    ids=["antimeridian", "pole", "diagonal", "west"],
)
def test_neighbours_found_wherever_they_are(
    lat: float, lon: float, dlat: float, dlon: float
) -> None:
    """The place index never hides a neighbour: whatever the direction or the place on
    earth, the decision is the one the distance alone makes."""
    other_lon = (lon + dlon + 180.0) % 360.0 - 180.0
    glass = at_place("glass_break", 0, "a", lat, lon)
    scream = at_place("scream", 3, "b", lat + dlat, other_lon)
    assert 80 < distance_m(glass, scream) <= DISTRESS.within_m  # each case is a neighbour
    assert run(RuleEngine([DISTRESS]), [glass, scream]) == [(f"distress:{glass.key}", True, 2)]


def test_index_agrees_with_distance_over_a_random_fleet() -> None:
    """200 devices scattered over 2 km: every alert's evidence is close in time and
    place, and every close pair of a glass break and a scream is in some alert."""
    import random

    rng = random.Random(5)
    places = [(LAT + rng.uniform(0, 0.018), LON + rng.uniform(0, 0.027)) for _ in range(200)]
    detections = [
        at_place(
            rng.choice(("glass_break", "scream")),
            rng.uniform(0, 600),
            f"d{i}",
            *places[i],
        )
        for i in rng.choices(range(200), k=400)
    ]
    detections.sort(key=lambda d: d.at)
    engine = RuleEngine([DISTRESS])
    covered: set[str] = set()
    for d in detections:
        for decision in engine.add(d):
            ev = decision.evidence
            covered.update(e.key for e in ev)
            if decision.new:
                glass = next(e for e in ev if e.label == "glass_break")
                scream = next(e for e in ev if e.label == "scream")
                assert abs((glass.at - scream.at).total_seconds()) <= DISTRESS.within_s
                assert distance_m(glass, scream) <= DISTRESS.within_m
    pairs = [
        (g, s)
        for g in detections
        if g.label == "glass_break"
        for s in detections
        if s.label == "scream"
        and abs((g.at - s.at).total_seconds()) <= DISTRESS.within_s
        and distance_m(g, s) <= DISTRESS.within_m
    ]
    assert pairs, "the fleet is dense enough to have close pairs"
    for g, s in pairs:
        assert g.key in covered or s.key in covered
