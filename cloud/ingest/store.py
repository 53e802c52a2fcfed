"""Commit a validated batch and the ack watermarks it moves, in one transaction.

The transaction stores data rows idempotently (keyed by message id) and dead letters,
then, last, moves each device's ack watermark (the highest seq such that it and every
lower seq are stored) over the seqs it stored; seqs above a gap wait as pending runs.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy import exc as sa_exc

from earwitness.cloud.clipstore import ClipStore
from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.errors import Fault, classify, is_transient, reason
from earwitness.cloud.db.repo import acks, clips, dead_letters, devices, events, inferences
from earwitness.cloud.ingest.validate import (
    Limits,
    Prepared,
    RawMessage,
    SeqKey,
    dead_letter,
    prepare,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SEEN_EVERY_S = 30.0
"""A known device's row (last_seen, location, model, version) is written again only when
one of those changed or its last_seen is this much newer than the one written: otherwise a
fleet of 10,000 devices meant 10,000 device-row updates per second. ``last_seen`` may lag
by this much; online/offline comes from status messages, not from it."""
SEEN_CACHE_MAX = 1_000_000  # devices remembered per writer process before starting over
STREAMS_CACHE_MAX = 1_000_000  # (device, epoch) with a committed watermark row, likewise
_SEEN_FIELDS = ("site", "lat", "lon", "model_id", "software_version")


@dataclass
class WriteResult:
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    watermarks: dict[SeqKey, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    lags_s: list[float] = field(default_factory=list)
    db_retries: int = 0  # retries this write needed after transient database errors


def seq_runs(seqs: set[tuple[str, str, str, int]]) -> dict[acks.Stream, list[acks.Run]]:
    """Stored seqs as runs, per (device, epoch): one per contiguous stretch."""
    runs: dict[acks.Stream, list[acks.Run]] = {}
    for _site, device, epoch, seq in sorted(seqs):
        stream = runs.setdefault((device, epoch), [])
        if stream and seq == stream[-1][1] + 1:
            stream[-1] = (stream[-1][0], seq)
        else:
            stream.append((seq, seq))
    return runs


def with_retries(
    fn: Callable[[], T], attempts: int, on_retry: Callable[[int, BaseException], None]
) -> T:
    delay = 0.05
    for attempt in range(attempts + 1):
        try:
            return fn()
        except sa_exc.SQLAlchemyError as exc:
            if not is_transient(exc) or attempt == attempts:
                raise
            on_retry(attempt + 1, exc)
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


class BatchStore:
    """Stores prepared batches; retries transient database errors with jittered backoff."""

    def __init__(self, engine: Engine, max_retries: int = 8) -> None:
        # READ COMMITTED on MySQL: a statement's scan keeps locks only on the rows it
        # changes (under REPEATABLE READ an UPDATE ... WHERE id IN (...) that scanned
        # other devices' rows kept them locked, and two writers deadlocked on them), and
        # every read sees what other writers committed before it (the pending runs
        # ``acks.settle`` reads under the marks' locks).
        self.engine = (
            engine.execution_options(isolation_level="READ COMMITTED")
            if engine.dialect.name in ("mysql", "mariadb")
            else engine
        )
        self.max_retries = max_retries
        self.retries = 0
        self._seen: dict[str, dict[str, Any]] = {}  # device rows this process wrote last
        self._streams: set[acks.Stream] = set()  # watermark rows known to be committed

    def _devices_due(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        due = []
        for row in rows:
            last = self._seen.get(row["id"])
            if (
                last is None
                or (row["last_seen"] - last["last_seen"]).total_seconds() >= SEEN_EVERY_S
                or any(row[k] is not None and row[k] != last[k] for k in _SEEN_FIELDS)
            ):
                due.append(row)
        return due

    def _remember_devices(self, rows: Sequence[dict[str, Any]]) -> None:
        if len(self._seen) > SEEN_CACHE_MAX:
            self._seen.clear()
        for row in rows:
            last = self._seen.get(row["id"], {})
            merged = {k: row[k] if row[k] is not None else last.get(k) for k in _SEEN_FIELDS}
            self._seen[row["id"]] = {**merged, "last_seen": row["last_seen"]}

    def _on_retry(self, attempt: int, exc: BaseException) -> None:
        self.retries += 1
        log.warning(
            "database error, retrying batch (attempt %d): %s",
            attempt,
            str(exc).splitlines()[0][:200],
        )

    # -- data -----------------------------------------------------------------------
    def store(self, p: Prepared) -> WriteResult:
        retries_before = self.retries
        result = with_retries(lambda: self._store_once(p), self.max_retries, self._on_retry)
        result.kinds = dict(p.kinds)
        result.lags_s = p.lags_s
        result.db_retries = self.retries - retries_before
        return result

    def _store_once(self, p: Prepared) -> WriteResult:
        result = WriteResult()
        due = self._devices_due(list(p.devices.values()))
        touched = [{r["id"] for r in due}, {s.device for s in p.statuses}, set(p.latest_heartbeat)]
        # Computed once, outside the transaction that a transient error repeats.
        site_of = {(d, e): site for site, d, e in (*p.floors, *(k[:3] for k in p.seqs))}
        floors = {(d, e): floor for (_s, d, e), floor in p.floors.items()}
        runs = seq_runs(p.seqs)
        with transaction(self.engine) as session:
            inserted = 0
            inserted += inferences.add_many(session, p.inferences)
            inserted += events.add_many(session, p.events)
            inserted += clips.add_many(session, p.clips)
            inserted += devices.add_heartbeats(session, p.heartbeats)
            dead_letters.add_many(session, p.dead)
            # Rows other writers also write come last, so their locks are held only to
            # the commit: first the device rows, then the ack watermarks. Several
            # statements write device rows, each in id order; two writers doing that
            # deadlocked (one's heartbeat UPDATE against the other's upsert), so when
            # there are several they are all locked first, in one ordered statement.
            if sum(1 for ids in touched if ids) > 1:
                devices.lock(session, set().union(*touched))
            devices.record_seen(session, due)
            for status in sorted(p.statuses, key=lambda st: (st.device, st.ts)):
                devices.apply_status(
                    session,
                    status.device,
                    status.state == "online",
                    status.ts,
                    status.config_error,
                    status.name,
                    ",".join(status.heads) if status.heads is not None else None,
                )
            devices.set_last_heartbeats(
                session,
                {
                    device: hb.model_dump(mode="json", exclude={"v", "kind"})
                    for device, hb in p.latest_heartbeat.items()
                },
            )
            marks = acks.settle(session, runs, floors, self._streams)
        self._remember_devices(due)  # only once committed
        if len(self._streams) > STREAMS_CACHE_MAX:
            self._streams.clear()
        self._streams.update(marks)
        result.watermarks = {(site_of[stream], *stream): mark for stream, mark in marks.items()}
        result.stored = inserted
        result.duplicates = p.data_rows - inserted
        result.dead_letters = len(p.dead)
        return result


def store_batch(
    batches: BatchStore, raw: Sequence[RawMessage], clips: ClipStore, limits: Limits
) -> WriteResult:
    """Prepare and store a batch. When the database refuses a message for its data, the
    batch is split in halves until that message stands alone; it is dead-lettered with
    the database's reason and everything else is stored. One bad device never holds back
    the fleet: only transient and operator faults hold the batch (and raise)."""
    try:
        return batches.store(prepare(raw, clips, limits))
    except Exception as exc:
        if classify(exc) is not Fault.DATA:
            raise
        if len(raw) == 1:
            log.warning("dead-lettered a message on %s: %s", raw[0].topic[:200], reason(exc))
            return batches.store(dead_letter(raw[0], reason(exc), limits))
        log.warning("batch of %d refused for its data, splitting it: %s", len(raw), reason(exc))
    half = len(raw) // 2
    return merge([store_batch(batches, part, clips, limits) for part in (raw[:half], raw[half:])])


def merge(results: Sequence[WriteResult]) -> WriteResult:
    """One result for a batch stored in parts (watermarks only move forward)."""
    out = WriteResult()
    kinds: dict[str, int] = {}
    for r in results:
        out.stored += r.stored
        out.duplicates += r.duplicates
        out.dead_letters += r.dead_letters
        out.db_retries += r.db_retries
        out.lags_s.extend(r.lags_s)
        for key, mark in r.watermarks.items():
            out.watermarks[key] = max(mark, out.watermarks.get(key, mark))
        for kind, n in r.kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    out.kinds = kinds
    return out
