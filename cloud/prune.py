"""`earwitness db prune`: delete old rows in small batches so the database stays responsive."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, delete, select

from cloud.clipstore import ClipStore
from cloud.db.models import Base, Clip, DeadLetter, Event, Heartbeat, Inference, SecondOpinion

_DURATION = re.compile(r"^(\d+)([dhm])$")


def parse_age(text: str) -> timedelta:
    """``90d``, ``12h`` or ``30m``."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"invalid age {text!r}: use a number followed by d, h or m (e.g. 90d)")
    value, unit = int(match.group(1)), match.group(2)
    return {"d": timedelta(days=value), "h": timedelta(hours=value), "m": timedelta(minutes=value)}[
        unit
    ]


TARGETS: list[tuple[type[Base], str]] = [
    (Inference, "window_start"),
    (Event, "started_at"),
    (Heartbeat, "ts"),
    (DeadLetter, "received_at"),
]


def _prune_table(
    engine: Engine, model: type[Base], column: str, cutoff: datetime, batch: int
) -> int:
    col = getattr(model, column)
    pk = model.id  # type: ignore[attr-defined]
    total = 0
    while True:
        with engine.begin() as conn:
            ids = conn.execute(select(pk).where(col < cutoff).order_by(col).limit(batch)).scalars()
            ids_list = list(ids)
            if not ids_list:
                return total
            conn.execute(delete(model).where(pk.in_(ids_list)))
        total += len(ids_list)


def prune(
    engine: Engine,
    older_than: timedelta,
    store: ClipStore | None = None,
    batch: int = 5000,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    cutoff = datetime.now(UTC) - older_than
    counts: dict[str, int] = {}
    for model, column in TARGETS:
        counts[model.__tablename__] = _prune_table(engine, model, column, cutoff, batch)
        if progress:
            progress(model.__tablename__, counts[model.__tablename__])
    # Clips: their second opinions first, then the audio once no row references it.
    removed = 0
    while True:
        with engine.begin() as conn:
            old = conn.execute(
                select(Clip.id, Clip.storage_key).where(Clip.started_at < cutoff).limit(batch)
            ).all()
            if not old:
                break
            ids = [row.id for row in old]
            conn.execute(delete(SecondOpinion).where(SecondOpinion.clip_id.in_(ids)))
            conn.execute(delete(Clip).where(Clip.id.in_(ids)))
            keys = {row.storage_key for row in old}
            still_used = set(
                conn.execute(select(Clip.storage_key).where(Clip.storage_key.in_(keys))).scalars()
            )
        if store is not None:
            for key in keys - still_used:
                store.delete(key)
        removed += len(ids)
    counts["clips"] = removed
    if progress:
        progress("clips", removed)
    return counts
