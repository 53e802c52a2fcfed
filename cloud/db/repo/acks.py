"""Acknowledgement bookkeeping: which seqs are stored (as runs) and each device's
watermark, the highest seq such that it and every lower seq are stored."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import greatest, insert_ignore, lock_rows, upsert
from earwitness.cloud.db.models import AckWatermark, PendingSeq, table_of

Stream = tuple[str, str]  # (device, epoch)


def record_runs(session: Session, runs: Sequence[Mapping[str, Any]]) -> None:
    """Stored seqs as pending_seqs runs: a run that starts where a stored one starts
    extends it."""

    def on_conflict(new: Any, table: Any) -> dict[str, Any]:
        return {"seq_end": greatest(session, table.c.seq_end, new.seq_end)}

    upsert(session, table_of(PendingSeq), runs, ["device_id", "epoch", "seq"], on_conflict)


def advance(mark: int, runs: list[tuple[int, int]]) -> int:
    """The watermark after the pending runs (sorted by start): it moves over every run
    that starts at or before ``mark + 1`` and stops at the first gap."""
    for start, end in runs:
        if start > mark + 1:
            break
        mark = max(mark, end)
    return mark


def advance_watermarks(
    session: Session, streams: Sequence[Stream], floors: Mapping[Stream, int]
) -> dict[Stream, int]:
    """Move each stream's watermark over its stored runs (and up to its floor: seqs the
    device says it no longer holds) and return the new marks. Three statements for the
    whole batch, not three per device; marks are locked in sorted order, so concurrent
    consumers lock in one order."""
    now = datetime.now(UTC)
    pairs = sorted(set(streams))
    insert_ignore(
        session,
        table_of(AckWatermark),
        [{"device_id": d, "epoch": e, "seq": -1, "updated_at": now} for d, e in pairs],
        "device_id",
    )
    which = tuple_(AckWatermark.device_id, AckWatermark.epoch).in_(pairs)
    query = lock_rows(
        session,
        select(AckWatermark.device_id, AckWatermark.epoch, AckWatermark.seq)
        .where(which)
        .order_by(AckWatermark.device_id, AckWatermark.epoch),
    )
    marks = {(d, e): int(q) for d, e, q in session.execute(query)}
    pending: dict[Stream, list[tuple[int, int]]] = defaultdict(list)
    for d, e, q, q_end in session.execute(
        select(PendingSeq.device_id, PendingSeq.epoch, PendingSeq.seq, PendingSeq.seq_end)
        .where(tuple_(PendingSeq.device_id, PendingSeq.epoch).in_(pairs))
        .order_by(PendingSeq.device_id, PendingSeq.epoch, PendingSeq.seq)
    ):
        pending[(d, e)].append((int(q), int(q_end)))
    stale = []
    moved: list[dict[str, Any]] = []
    out: dict[Stream, int] = {}
    for device, epoch in pairs:
        start = marks[(device, epoch)]
        mark = advance(max(start, floors.get((device, epoch), -1)), pending[(device, epoch)])
        if mark != start:
            moved.append({"device_id": device, "epoch": epoch, "seq": mark, "updated_at": now})
        if pending[(device, epoch)] and pending[(device, epoch)][0][1] <= mark:
            stale.append((device, epoch))
        out[(device, epoch)] = mark
    # One statement for every mark that moved (the rows exist and are locked above), not
    # one UPDATE per device: a batch from a large fleet touches thousands of devices.
    upsert(
        session,
        table_of(AckWatermark),
        moved,
        ["device_id", "epoch"],
        lambda new, _table: {"seq": new.seq, "updated_at": new.updated_at},
    )
    if stale:
        # Runs the new marks cover, in one statement whose size does not grow with the
        # number of devices (an OR of per-device ranges took seconds to build for 2,000).
        covered = (
            select(AckWatermark.seq)
            .where(
                AckWatermark.device_id == PendingSeq.device_id,
                AckWatermark.epoch == PendingSeq.epoch,
            )
            .scalar_subquery()
        )
        session.execute(
            delete(PendingSeq).where(
                tuple_(PendingSeq.device_id, PendingSeq.epoch).in_(stale),
                PendingSeq.seq_end <= covered,
            )
        )
    return out


def watermarks(session: Session, streams: Sequence[Stream]) -> dict[Stream, int]:
    if not streams:
        return {}
    rows = session.execute(
        select(AckWatermark.device_id, AckWatermark.epoch, AckWatermark.seq).where(
            tuple_(AckWatermark.device_id, AckWatermark.epoch).in_(list(streams))
        )
    ).all()
    return {(d, e): int(q) for d, e, q in rows}
