"""How far to trust each edge label: agreement with the second opinion and with people."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Engine

from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.repo import opinions
from earwitness.cloud.db.repo.opinions import By


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval: sensible for small counts, unlike p +- 2 sigma."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Trust:
    key: str  # label or device
    n: int
    agree: int
    rate: float
    low: float
    high: float
    reviewed: int
    reviewed_correct: int

    def as_dict(self) -> dict[str, object]:
        return {
            "key": self.key,
            "n": self.n,
            "agree": self.agree,
            "rate": round(self.rate, 4),
            "ci95": [round(self.low, 4), round(self.high, 4)],
            "reviewed": self.reviewed,
            "reviewed_correct": self.reviewed_correct,
        }


def trust_figures(engine: Engine, by: By = "label", backend: str | None = None) -> list[Trust]:
    """Agreement of the edge's top-1 with the second opinion, per edge label or device,
    next to the human reviews of the same label or device."""
    with transaction(engine) as session:
        by_key = {a.key: a for a in opinions.agreement(session, by, backend)}
        reviewed = {a.key: a for a in opinions.review_agreement(session, by)}
    out = []
    for key in sorted(set(by_key) | set(reviewed)):
        second = by_key.get(key)
        n, agree = (second.n, second.agree) if second else (0, 0)
        low, high = wilson(agree, n)
        people = reviewed.get(key)
        r_n, r_ok = (people.n, people.agree) if people else (0, 0)
        out.append(Trust(key, n, agree, agree / n if n else 0.0, low, high, r_n, r_ok))
    return out
