"""How far to trust each edge label: agreement with the second opinion and with people."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Engine, Integer, func, select

from cloud.db.models import Inference, Review, SecondOpinion


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


def trust_figures(engine: Engine, by: str = "label", backend: str | None = None) -> list[Trust]:
    """Agreement of the edge's top-1 with the second opinion, per edge label or device,
    next to the human reviews of the same label or device."""
    key_col = SecondOpinion.edge_label if by == "label" else SecondOpinion.device_id
    query = select(key_col, func.count(), func.sum(func.cast(SecondOpinion.top1_agree, Integer)))
    if backend:
        query = query.where(SecondOpinion.backend == backend)
    query = query.group_by(key_col)
    review_key = Inference.label if by == "label" else Inference.device_id
    reviews = (
        select(review_key, func.count(), func.sum(func.cast(Review.correct, Integer)))
        .join(Inference, Inference.id == Review.inference_id)
        .group_by(review_key)
    )
    with engine.connect() as conn:
        rows = conn.execute(query).all()
        reviewed = {k: (int(n), int(c or 0)) for k, n, c in conn.execute(reviews).all()}
    out = []
    keys = {k for k, _n, _a in rows} | set(reviewed)
    by_key = {k: (int(n), int(a or 0)) for k, n, a in rows}
    for key in sorted(keys):
        n, agree = by_key.get(key, (0, 0))
        low, high = wilson(agree, n)
        r_n, r_ok = reviewed.get(key, (0, 0))
        out.append(Trust(key, n, agree, agree / n if n else 0.0, low, high, r_n, r_ok))
    return out
