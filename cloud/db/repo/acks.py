"""Acknowledgement bookkeeping: which seqs are stored (as runs) and each device's
watermark, the highest seq such that it and every lower seq are stored."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import greatest, insert_ignore, rows_with_keys, upsert
from earwitness.cloud.db.models import AckWatermark, PendingSeq, table_of

Stream = tuple[str, str]  # (device, epoch)


Run = tuple[int, int]  # seq..seq_end, both stored


def advance(mark: int, runs: list[Run]) -> int:
    """The watermark after the stored runs (sorted by start): it moves over every run
    that starts at or before ``mark + 1`` and stops at the first gap."""
    for start, end in runs:
        if start > mark + 1:
            break
        mark = max(mark, end)
    return mark


def settle(
    session: Session,
    runs: Mapping[Stream, Sequence[Run]],
    floors: Mapping[Stream, int],
    known: Collection[Stream] = (),
) -> dict[Stream, int]:
    """Move each stream's watermark over the runs this transaction stores and the runs
    stored before it (and up to its floor: seqs the device says it no longer holds);
    keep in ``pending_seqs`` only the runs still above a gap. Returns the new marks.

    Called last in the transaction that stores the data, so the marks commit with it
    and their row locks (taken in sorted order: concurrent writers lock in one order)
    are held only until that commit. A device's messages mostly arrive in order, so
    mostly nothing is written to ``pending_seqs`` at all: each run is absorbed by the
    mark it continues. A statement or two per batch, never one per device. ``known``
    are streams whose watermark row this process has seen committed (no insert needed).
    """
    now = datetime.now(UTC)
    pairs = sorted(set(runs) | set(floors))
    if not pairs:
        return {}
    table = table_of(AckWatermark)
    if any(p not in known for p in pairs):
        # Rows to create: the insert covers every pair, creating and locking them in one
        # ordered pass (an existing row is locked by its ON DUPLICATE KEY), and the marks
        # are then read without locking again. A second, locking read re-took locks in
        # key order and, on MariaDB, the rows next to each key too: between two writers
        # that was a deadlock.
        insert_ignore(session, table, [_mark_row(d, e, -1, now) for d, e in pairs], "device_id")
        marks = _read_marks(session, pairs, lock=False)
    else:
        marks = _read_marks(session, pairs, lock=True)
    gone = [p for p in pairs if p not in marks]  # known here, yet deleted since
    if gone:
        insert_ignore(session, table, [_mark_row(d, e, -1, now) for d, e in gone], "device_id")
        marks.update(_read_marks(session, gone, lock=False))
    # A plain read after the locks sees every run committed by writers that held them
    # before: the store runs at READ COMMITTED on MySQL (each read sees the latest
    # commits; under REPEATABLE READ it would also hold only if nothing before it in the
    # transaction read), and SQLite has one writer at a time.
    stored: dict[Stream, list[Run]] = defaultdict(list)
    pending = table_of(PendingSeq)
    for d, e, q, q_end in rows_with_keys(
        session, pending, ("device_id", "epoch", "seq", "seq_end"), ("device_id", "epoch"), pairs
    ):
        stored[(d, e)].append((int(q), int(q_end)))
    moved: list[dict[str, Any]] = []
    keep: list[dict[str, Any]] = []
    covered: list[tuple[str, str, int]] = []
    out: dict[Stream, int] = {}
    for stream in pairs:
        start = marks[stream]
        new = sorted(runs.get(stream, ()))
        mark = advance(max(start, floors.get(stream, -1)), sorted([*stored[stream], *new]))
        if mark != start:
            moved.append(_mark_row(*stream, mark, now))
        keep += [
            {"device_id": stream[0], "epoch": stream[1], "seq": q, "seq_end": q_end}
            for q, q_end in new
            if q_end > mark
        ]
        covered += [(*stream, q) for q, q_end in stored[stream] if q_end <= mark]
        out[stream] = mark
    # One statement for every mark that moved (the rows exist and are locked above).
    upsert(session, table, moved, ["device_id", "epoch"], _set_mark)
    if keep:  # a run that starts where a stored one starts extends it

        def extend(new: Any, table: Any) -> dict[str, Any]:
            return {"seq_end": greatest(session, table.c.seq_end, new.seq_end)}

        upsert(session, pending, keep, ["device_id", "epoch", "seq"], extend)
    if covered:
        session.execute(
            delete(PendingSeq).where(
                tuple_(PendingSeq.device_id, PendingSeq.epoch, PendingSeq.seq).in_(covered)
            )
        )
    return out


def _mark_row(device: str, epoch: str, seq: int, now: datetime) -> dict[str, Any]:
    return {"device_id": device, "epoch": epoch, "seq": seq, "updated_at": now}


def _set_mark(new: Any, _table: Any) -> dict[str, Any]:
    return {"seq": new.seq, "updated_at": new.updated_at}


def _read_marks(session: Session, pairs: Sequence[Stream], lock: bool) -> dict[Stream, int]:
    rows = rows_with_keys(
        session,
        table_of(AckWatermark),
        ("device_id", "epoch", "seq"),
        ("device_id", "epoch"),
        pairs,
        for_update=lock,
    )
    return {(d, e): int(q) for d, e, q in rows}


def watermarks(session: Session, streams: Sequence[Stream]) -> dict[Stream, int]:
    if not streams:
        return {}
    rows = session.execute(
        select(AckWatermark.device_id, AckWatermark.epoch, AckWatermark.seq).where(
            tuple_(AckWatermark.device_id, AckWatermark.epoch).in_(list(streams))
        )
    ).all()
    return {(d, e): int(q) for d, e, q in rows}
