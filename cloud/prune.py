"""`earwitness db prune`: delete old rows in small batches so the database stays responsive."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from earwitness.cloud.clipstore import ClipStore
from earwitness.cloud.db import partitions
from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.repo import retention

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


def prune(
    engine: Engine,
    older_than: timedelta,
    store: ClipStore | None = None,
    batch: int = 5000,
    progress: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    cutoff = datetime.now(UTC) - older_than
    counts: dict[str, int] = {}
    # Whole months of inferences go by partition (MySQL/MariaDB; instant); the rows of
    # the month the cutoff falls in go by the batched deletes below.
    partitions.roll(engine)
    dropped = partitions.drop_before(engine, cutoff)
    for model, column in retention.TIMED:
        total = sum(dropped.values()) if model.__tablename__ == partitions.TABLE else 0
        while True:
            with transaction(engine) as session:
                deleted = retention.delete_batch(session, model, column, cutoff, batch)
            if not deleted:
                break
            total += deleted
        counts[model.__tablename__] = total
        if progress:
            progress(model.__tablename__, total)
    # Clips: their second opinions first, then the audio once no row references it.
    removed = 0
    while True:
        with transaction(engine) as session:
            deleted, unused_keys = retention.delete_clip_batch(session, cutoff, batch)
        if not deleted:
            break
        if store is not None:
            for key in unused_keys:
                store.delete(key)
        removed += deleted
    counts["clips"] = removed
    if progress:
        progress("clips", removed)
    return counts
