"""Second opinions and the agreement counts the trust report is made of."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Integer, func, select
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import insert_ignore
from earwitness.cloud.db.models import Inference, Review, SecondOpinion, table_of

By = Literal["label", "device"]


def add_many(session: Session, rows: Sequence[Mapping[str, Any]]) -> int:
    """One opinion per (clip, backend): a clip scored twice keeps its first opinion."""
    return insert_ignore(session, table_of(SecondOpinion), rows, "clip_id")


def listing(
    session: Session, device: str | None, disagreements: bool, limit: int
) -> list[SecondOpinion]:
    q = select(SecondOpinion)
    if device:
        q = q.where(SecondOpinion.device_id == device)
    if disagreements:
        q = q.where(SecondOpinion.top1_agree.is_(False))
    q = q.order_by(SecondOpinion.id.desc()).limit(limit)
    return list(session.scalars(q))


@dataclass(frozen=True)
class Agreement:
    key: str  # label or device
    n: int
    agree: int


def agreement(session: Session, by: By, backend: str | None) -> list[Agreement]:
    """How often the edge's top-1 matched the second opinion, per edge label or device."""
    key_col = SecondOpinion.edge_label if by == "label" else SecondOpinion.device_id
    query = select(key_col, func.count(), func.sum(func.cast(SecondOpinion.top1_agree, Integer)))
    if backend:
        query = query.where(SecondOpinion.backend == backend)
    rows = session.execute(query.group_by(key_col)).all()
    return [Agreement(k, int(n), int(a or 0)) for k, n, a in rows]


def review_agreement(session: Session, by: By) -> list[Agreement]:
    """How often people confirmed the edge label, per edge label or device."""
    key = Inference.label if by == "label" else Inference.device_id
    query = (
        select(key, func.count(), func.sum(func.cast(Review.correct, Integer)))
        .join(Inference, Inference.id == Review.inference_id)
        .group_by(key)
    )
    return [Agreement(k, int(n), int(c or 0)) for k, n, c in session.execute(query).all()]


def first_of_clips(session: Session, clip_ids: Sequence[int]) -> dict[int, SecondOpinion]:
    """The first second opinion of each clip (by row id), for feeds and popups."""
    if not clip_ids:
        return {}
    q = (
        select(SecondOpinion)
        .where(SecondOpinion.clip_id.in_(list(clip_ids)))
        .order_by(SecondOpinion.id)
    )
    out: dict[int, SecondOpinion] = {}
    for o in session.scalars(q):
        out.setdefault(o.clip_id, o)
    return out
