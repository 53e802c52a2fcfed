"""Validate a batch of raw MQTT messages and commit it in one transaction.

The transaction stores data rows idempotently (keyed by message id), dead letters, and
the (device, epoch, seq) of everything stored. A second short transaction advances the
per-device ack watermark: the highest seq such that it and every lower seq are stored.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, and_, delete, func, or_, select, tuple_, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud.clipstore import ClipStore
from cloud.db.models import (
    AckWatermark,
    Clip,
    DeadLetter,
    Device,
    Event,
    Heartbeat,
    Inference,
    PendingSeq,
    table_of,
)
from cloud.db.upsert import insert_ignore, upsert_runs
from cloud.ingest import rows
from shared import audio
from shared.errors import AudioError
from shared.messages import (
    ClipMessage,
    EventMessage,
    HeartbeatMessage,
    InferenceMessage,
    MessageError,
    StatusMessage,
    decode,
)
from shared.topics import TopicError, is_downlink, parse

log = logging.getLogger(__name__)

T = TypeVar("T")
SeqKey = tuple[str, str, str]  # (site, device, epoch)


@dataclass(frozen=True)
class RawMessage:
    topic: str
    payload: bytes
    received: datetime
    token: Any = None  # opaque: what the consumer needs to acknowledge it


@dataclass
class Prepared:
    inferences: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    clips: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    statuses: list[StatusMessage] = field(default_factory=list)
    latest_heartbeat: dict[str, HeartbeatMessage] = field(default_factory=dict)
    seqs: set[tuple[str, str, str, int]] = field(default_factory=set)  # site, device, epoch, seq
    floors: dict[SeqKey, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lags_s: list[float] = field(default_factory=list)

    @property
    def data_rows(self) -> int:
        return len(self.inferences) + len(self.events) + len(self.clips) + len(self.heartbeats)


@dataclass
class WriteResult:
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    watermarks: dict[SeqKey, int] = field(default_factory=dict)
    kinds: dict[str, int] = field(default_factory=dict)
    lags_s: list[float] = field(default_factory=list)
    db_retries: int = 0  # retries this write needed after transient database errors


class Limits:
    def __init__(self, clip_max_bytes: int, dead_letter_payload_bytes: int) -> None:
        self.clip_max_bytes = clip_max_bytes
        self.dead_letter_payload_bytes = dead_letter_payload_bytes


def _seq_of_rejected(topic: str, payload: bytes) -> tuple[str, str, str, int] | None:
    """Best effort: a dead-lettered message still counts as stored for the watermark,
    otherwise one malformed message would hold a device's acknowledgements back forever."""
    try:
        t = parse(topic)
        raw = json.loads(payload)
    except (TopicError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    epoch, seq = raw.get("epoch"), raw.get("seq")
    if (
        isinstance(epoch, str)
        and epoch.isalnum()
        and 8 <= len(epoch) <= 32
        and isinstance(seq, int)
        and not isinstance(seq, bool)
        and 0 <= seq < 2**62
    ):
        return (t.site, t.device, epoch, seq)
    return None


def _touch_device(p: Prepared, site: str, device: str, when: datetime, **values: Any) -> None:
    row = p.devices.get(device)
    if row is None:
        row = {
            "id": device,
            "site": site,
            "first_seen": when,
            "last_seen": when,
            "lat": None,
            "lon": None,
            "model_id": None,
            "software_version": None,
            "online": False,
        }
        p.devices[device] = row
    row["last_seen"] = max(row["last_seen"], when)
    row["first_seen"] = min(row["first_seen"], when)
    for key, value in values.items():
        if value is not None:
            row[key] = value


def prepare(batch: Sequence[RawMessage], store: ClipStore, limits: Limits) -> Prepared:
    """Validate every message; CPU work and clip-store writes happen here, outside the
    database transaction."""
    p = Prepared()
    for raw in batch:
        if not raw.payload and raw.topic.endswith("/status"):
            p.kinds["retained_cleared"] += 1  # an empty retained publish clears a status
            continue
        if is_downlink(raw.topic.rsplit("/", 1)[-1]):
            p.kinds["downlink_ignored"] += 1  # our own acks and the operators' config
            continue
        try:
            msg = decode(raw.topic, raw.payload)
            if isinstance(msg, ClipMessage):
                blob = msg.audio()
                if len(blob) > limits.clip_max_bytes:
                    raise MessageError(
                        f"clip audio is {len(blob)} bytes, limit {limits.clip_max_bytes}"
                    )
                try:
                    audio.decode_bytes(blob, f"clip {msg.clip_id}")
                except AudioError as exc:
                    raise MessageError(f"clip does not decode as audio: {exc.problem}") from exc
                storage_key = store.put(blob)
                p.clips.append(rows.clip_row(msg, storage_key, len(blob), raw.received))
        except MessageError as exc:
            p.dead.append(
                {
                    "topic": raw.topic[:255],
                    "payload": raw.payload[: limits.dead_letter_payload_bytes],
                    "payload_size": len(raw.payload),
                    "error": str(exc)[:4000],
                    "received_at": raw.received,
                }
            )
            rejected = _seq_of_rejected(raw.topic, raw.payload)
            if rejected:
                p.seqs.add(rejected)
            p.kinds["dead_letter"] += 1
            continue
        p.kinds[msg.kind] += 1
        p.lags_s.append((raw.received - msg.ts).total_seconds())
        location = getattr(msg, "location", None)
        lat, lon = (location.lat, location.lon) if location else (None, None)
        if isinstance(msg, StatusMessage):
            _touch_device(
                p,
                msg.site,
                msg.device,
                raw.received,
                lat=lat,
                lon=lon,
                model_id=msg.model,
                software_version=msg.version,
            )
            p.statuses.append(msg)
            continue
        if isinstance(msg, InferenceMessage):
            p.inferences.append(rows.inference_row(msg, raw.received))
            _touch_device(
                p, msg.site, msg.device, raw.received, lat=lat, lon=lon, model_id=msg.model
            )
        elif isinstance(msg, EventMessage):
            p.events.append(rows.event_row(msg, raw.received))
            _touch_device(p, msg.site, msg.device, raw.received, lat=lat, lon=lon)
        elif isinstance(msg, ClipMessage):
            _touch_device(p, msg.site, msg.device, raw.received, model_id=msg.model)
        elif isinstance(msg, HeartbeatMessage):
            p.heartbeats.append(rows.heartbeat_row(msg, raw.received))
            _touch_device(
                p,
                msg.site,
                msg.device,
                raw.received,
                lat=lat,
                lon=lon,
                model_id=msg.model,
                software_version=msg.version,
            )
            prev = p.latest_heartbeat.get(msg.device)
            if prev is None or msg.ts >= prev.ts:
                p.latest_heartbeat[msg.device] = msg
            seq_key = (msg.site, msg.device, msg.epoch)
            p.floors[seq_key] = max(p.floors.get(seq_key, -1), msg.outbox_min_seq - 1)
        p.seqs.add((msg.site, msg.device, msg.epoch, msg.seq))
    return p


def seq_runs(seqs: set[tuple[str, str, str, int]]) -> list[dict[str, Any]]:
    """Stored seqs as pending_seqs rows: one per contiguous run per (device, epoch)."""
    runs: list[dict[str, Any]] = []
    for _site, device, epoch, seq in sorted(seqs):
        last = runs[-1] if runs else None
        if (
            last
            and last["device_id"] == device
            and last["epoch"] == epoch
            and (seq == last["seq_end"] + 1)
        ):
            last["seq_end"] = seq
        else:
            runs.append({"device_id": device, "epoch": epoch, "seq": seq, "seq_end": seq})
    return runs


def advance(mark: int, runs: list[tuple[int, int]]) -> int:
    """The watermark after the pending runs (sorted by start): it moves over every run
    that starts at or before ``mark + 1`` and stops at the first gap."""
    for start, end in runs:
        if start > mark + 1:
            break
        mark = max(mark, end)
    return mark


def is_transient(exc: BaseException) -> bool:
    """Deadlocks, lock timeouts and lost connections: retry the whole batch."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
    )


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


class BatchWriter:
    def __init__(self, engine: Engine, max_retries: int = 8) -> None:
        self.engine = engine
        self.max_retries = max_retries
        self.retries = 0
        self._mysql = engine.dialect.name in ("mysql", "mariadb")

    def _on_retry(self, attempt: int, exc: BaseException) -> None:
        self.retries += 1
        log.warning(
            "database error, retrying batch (attempt %d): %s",
            attempt,
            str(exc).splitlines()[0][:200],
        )

    # -- data -----------------------------------------------------------------------
    def write(self, p: Prepared) -> WriteResult:
        retries_before = self.retries
        result = with_retries(lambda: self._write_once(p), self.max_retries, self._on_retry)
        result.watermarks = self.advance_watermarks(p)
        result.kinds = dict(p.kinds)
        result.lags_s = p.lags_s
        result.db_retries = self.retries - retries_before
        return result

    def _write_once(self, p: Prepared) -> WriteResult:
        result = WriteResult()
        with self.engine.begin() as conn:
            self._upsert_devices(conn, p)
            inserted = 0
            inserted += insert_ignore(conn, table_of(Inference), p.inferences, "message_id")
            inserted += insert_ignore(conn, table_of(Event), p.events, "message_id")
            inserted += insert_ignore(conn, table_of(Clip), p.clips, "message_id")
            inserted += insert_ignore(conn, table_of(Heartbeat), p.heartbeats, "message_id")
            if p.dead:
                conn.execute(table_of(DeadLetter).insert(), p.dead)
            for status in p.statuses:
                self._apply_status(conn, status)
            for device, hb in p.latest_heartbeat.items():
                conn.execute(
                    update(Device)
                    .where(Device.id == device)
                    .values(last_heartbeat=hb.model_dump(mode="json", exclude={"v", "kind"}))
                )
            upsert_runs(conn, seq_runs(p.seqs))
        result.stored = inserted
        result.duplicates = p.data_rows - inserted
        result.dead_letters = len(p.dead)
        return result

    def _upsert_devices(self, conn: Connection, p: Prepared) -> None:
        if not p.devices:
            return
        table = table_of(Device)
        values = [p.devices[k] for k in sorted(p.devices)]  # sorted: stable lock order
        if self._mysql:
            stmt = mysql_insert(table)
            new = stmt.inserted
            stmt = stmt.on_duplicate_key_update(
                site=new.site,
                last_seen=func.greatest(table.c.last_seen, new.last_seen),
                lat=func.coalesce(new.lat, table.c.lat),
                lon=func.coalesce(new.lon, table.c.lon),
                model_id=func.coalesce(new.model_id, table.c.model_id),
                software_version=func.coalesce(new.software_version, table.c.software_version),
            )
        else:
            sstmt = sqlite_insert(table)
            new = sstmt.excluded
            stmt = sstmt.on_conflict_do_update(  # type: ignore[assignment]
                index_elements=["id"],
                set_={
                    "site": new.site,
                    "last_seen": func.max(table.c.last_seen, new.last_seen),
                    "lat": func.coalesce(new.lat, table.c.lat),
                    "lon": func.coalesce(new.lon, table.c.lon),
                    "model_id": func.coalesce(new.model_id, table.c.model_id),
                    "software_version": func.coalesce(
                        new.software_version, table.c.software_version
                    ),
                },
            )
        conn.execute(stmt, values)

    @staticmethod
    def _apply_status(conn: Connection, msg: StatusMessage) -> None:
        # Retained status and last-will messages can arrive late or twice: only a newer
        # status changes the device's state.
        values: dict[str, Any] = {
            "online": msg.state == "online",
            "status_at": msg.ts,
            "config_error": msg.config_error,
        }
        conn.execute(
            update(Device)
            .where(Device.id == msg.device)
            .where((Device.status_at.is_(None)) | (Device.status_at <= msg.ts))
            .values(**values)
        )

    # -- acknowledgements ------------------------------------------------------------
    def advance_watermarks(self, p: Prepared) -> dict[SeqKey, int]:
        keys = sorted({(s, d, e) for (s, d, e, _q) in p.seqs} | set(p.floors))
        if not keys:
            return {}
        return with_retries(
            lambda: self._advance_once(keys, p.floors), self.max_retries, self._on_retry
        )

    def _advance_once(self, keys: list[SeqKey], floors: dict[SeqKey, int]) -> dict[SeqKey, int]:
        now = datetime.now(UTC)
        out: dict[SeqKey, int] = {}
        with self.engine.begin() as conn:
            insert_ignore(
                conn,
                table_of(AckWatermark),
                [{"device_id": d, "epoch": e, "seq": -1, "updated_at": now} for _s, d, e in keys],
                "device_id",
            )
            # Three statements for the whole batch, not three per device: lock the marks
            # (sorted, so concurrent consumers lock in one order), read the pending seqs.
            pairs = [(d, e) for _s, d, e in keys]
            which = tuple_(AckWatermark.device_id, AckWatermark.epoch).in_(pairs)
            query = (
                select(AckWatermark.device_id, AckWatermark.epoch, AckWatermark.seq)
                .where(which)
                .order_by(AckWatermark.device_id, AckWatermark.epoch)
            )
            if self._mysql:
                query = query.with_for_update()
            marks = {(d, e): int(q) for d, e, q in conn.execute(query)}
            pending: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
            for d, e, q, q_end in conn.execute(
                select(PendingSeq.device_id, PendingSeq.epoch, PendingSeq.seq, PendingSeq.seq_end)
                .where(tuple_(PendingSeq.device_id, PendingSeq.epoch).in_(pairs))
                .order_by(PendingSeq.device_id, PendingSeq.epoch, PendingSeq.seq)
            ):
                pending[(d, e)].append((int(q), int(q_end)))
            stale = []
            for site, device, epoch in keys:
                start = marks[(device, epoch)]
                mark = advance(
                    max(start, floors.get((site, device, epoch), -1)), pending[(device, epoch)]
                )
                if mark != start:
                    conn.execute(
                        update(AckWatermark)
                        .where(AckWatermark.device_id == device, AckWatermark.epoch == epoch)
                        .values(seq=mark, updated_at=now)
                    )
                if pending[(device, epoch)] and pending[(device, epoch)][0][1] <= mark:
                    stale.append(
                        and_(
                            PendingSeq.device_id == device,
                            PendingSeq.epoch == epoch,
                            PendingSeq.seq <= mark,  # the key's range: runs end after they start
                            PendingSeq.seq_end <= mark,
                        )
                    )
                out[(site, device, epoch)] = mark
            if stale:
                conn.execute(delete(PendingSeq).where(or_(*stale)))
        return out
