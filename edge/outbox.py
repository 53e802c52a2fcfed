"""Durable store-and-forward: every outgoing message is written here before it is sent,
and deleted only when the cloud acknowledges it (see docs/protocol.md, "Acknowledgement").

SQLite in WAL mode survives the agent being killed: a committed row is on disk. The
outbox is bounded by bytes and age; when full, the oldest rows are dropped and counted.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    sent REAL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS ix_outbox_sent ON outbox (sent);
"""


SEQ_BLOCK = 1000  # seqs reserved per durable write (one fsync per 1,000 messages)
MAX_BACKOFF_DOUBLINGS = 5  # an overdue row waits at most 32 x ack_timeout_s between sends


@dataclass(frozen=True)
class Row:
    seq: int
    kind: str
    topic: str
    payload: bytes
    created: float


@dataclass(frozen=True)
class OutboxStats:
    rows: int
    bytes: int
    min_seq: int
    next_seq: int
    dropped: int
    acked_seq: int


class Outbox:
    def __init__(self, path: Path, max_bytes: int, max_age_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives the process being killed (the OS has it);
        # only a power cut can lose the last transactions.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.epoch = self._meta("epoch") or self._init_epoch()
        highest = self._db.execute("SELECT MAX(seq) FROM outbox").fetchone()[0]
        # Seqs are reserved in durable blocks: a power cut may take the newest rows (and
        # their delivery) with it, but never the reservation, so a seq the cloud may
        # already hold is not issued again with the same message id. The seqs of a block
        # left unused after a crash are a gap the heartbeat's outbox_min_seq closes.
        self._reserved_upto = int(self._meta("reserved_upto") or -1)
        self._next_seq = (
            max(
                -1 if highest is None else int(highest),
                int(self._meta("deleted_upto") or -1),
                self._reserved_upto,
            )
            + 1
        )
        # After a clean close the reservation ends at the last seq used: no gap.
        self._reserved_upto = self._next_seq - 1
        self.acked_seq = int(self._meta("acked_seq") or -1)
        # The highest seq ever handed to MQTT: rows keep their sent time until acknowledged,
        # and everything at or below acked_seq was sent before it was acknowledged.
        sent = self._db.execute("SELECT MAX(seq) FROM outbox WHERE sent IS NOT NULL").fetchone()[0]
        self.sent_upto = max(self.acked_seq, -1 if sent is None else int(sent))
        self.dropped = int(self._meta("dropped") or 0)
        self.acks_rejected = 0  # acks above what was sent, or covering unsent rows
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox").fetchone()
        self._rows, self._bytes = int(row[0]), int(row[1])
        self.new_message = threading.Event()

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: object) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, str(value)),
        )

    def _init_epoch(self) -> str:
        epoch = uuid.uuid4().hex[:16]
        self._set_meta("epoch", epoch)
        return epoch

    # -- writing ------------------------------------------------------------------------
    def append(self, kind: str, topic: str, build: Callable[[int], bytes]) -> int:
        """Assign the next seq, build the payload with it and store it, atomically."""
        with self._lock:
            seq = self._next_seq
            if seq > self._reserved_upto:
                self._reserve_locked(seq + SEQ_BLOCK - 1)
            payload = build(seq)
            # One INSERT, its own transaction. The next seq is derived on open from the
            # highest seq present or ever deleted, so no second write per message.
            self._db.execute(
                "INSERT INTO outbox (seq, kind, topic, payload, size, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (seq, kind, topic, payload, len(payload), time.time()),
            )
            self._next_seq = seq + 1
            self._rows += 1
            self._bytes += len(payload)
            if self._bytes > self.max_bytes:
                self._drop_oldest_locked()
        self.new_message.set()
        return seq

    def _reserve_locked(self, upto: int) -> None:
        """Durably (fsync, whatever the connection's synchronous level) record that seqs
        up to ``upto`` may be in use."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self._set_meta("reserved_upto", upto)
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._reserved_upto = upto

    def _drop_oldest_locked(self) -> None:
        target = int(self.max_bytes * 0.9)  # drop a little extra so we do not churn per row
        doomed: list[int] = []
        freed = 0
        for seq, size in self._db.execute("SELECT seq, size FROM outbox ORDER BY seq"):
            if self._bytes - freed <= target:
                break
            doomed.append(seq)
            freed += size
        self._delete_seqs_locked(doomed, count_as_dropped=True)
        log.warning("outbox full: dropped %d oldest messages (%d bytes)", len(doomed), freed)

    def _delete_seqs_locked(self, seqs: list[int], count_as_dropped: bool) -> None:
        if not seqs:
            return
        self._db.execute("BEGIN IMMEDIATE")
        freed = 0
        for i in range(0, len(seqs), 500):
            part = seqs[i : i + 500]
            marks = ",".join("?" * len(part))
            freed += int(
                self._db.execute(
                    f"SELECT COALESCE(SUM(size), 0) FROM outbox WHERE seq IN ({marks})", part
                ).fetchone()[0]
            )
            self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", part)
        if count_as_dropped:
            self.dropped += len(seqs)
            self._set_meta("dropped", self.dropped)
        self._note_deleted_locked(max(seqs))
        self._db.execute("COMMIT")
        self._rows -= len(seqs)
        self._bytes -= freed

    def _note_deleted_locked(self, seq: int) -> None:
        """Remember the highest seq ever deleted: seqs are never reused in an epoch."""
        if seq > int(self._meta("deleted_upto") or -1):
            self._set_meta("deleted_upto", seq)

    def drop_expired(self) -> int:
        """Drop rows older than max_age_s (counted as dropped); returns how many."""
        cutoff = time.time() - self.max_age_s
        with self._lock:
            seqs = [
                r[0]
                for r in self._db.execute(
                    "SELECT seq FROM outbox WHERE created < ? ORDER BY seq", (cutoff,)
                )
            ]
            self._delete_seqs_locked(seqs, count_as_dropped=True)
        return len(seqs)

    # -- sending --------------------------------------------------------------------------
    def rows_after(self, after_seq: int, limit: int, upto: int | None = None) -> list[Row]:
        """Rows with ``after_seq < seq [<= upto]`` in seq order (primary-key range scan)."""
        query = "SELECT seq, kind, topic, payload, created FROM outbox WHERE seq > ?"
        params: list[object] = [after_seq]
        if upto is not None:
            query += " AND seq <= ?"
            params.append(upto)
        query += " ORDER BY seq LIMIT ?"
        params.append(limit)
        with self._lock:
            return [Row(*r) for r in self._db.execute(query, params)]

    def overdue(self, limit: int, ack_timeout_s: float) -> list[Row]:
        """Rows still unacknowledged ``ack_timeout_s`` after they were sent, doubling
        the wait with each attempt (``MAX_BACKOFF_DOUBLINGS`` times at most): a cloud that is slow,
        not gone, is not sent every row again and again."""
        return self._rows_where(
            "sent IS NOT NULL AND sent < ? - ? * "
            f"(CASE WHEN attempts > {MAX_BACKOFF_DOUBLINGS} THEN {2**MAX_BACKOFF_DOUBLINGS}"
            " ELSE (1 << MAX(attempts - 1, 0)) END)",
            ack_timeout_s,
            limit,
            backoff=True,
        )

    def due(self, limit: int, ack_timeout_s: float) -> list[Row]:
        """Unsent rows and rows whose acknowledgement is overdue, oldest first."""
        return self._rows_where("sent IS NULL OR sent < ?", ack_timeout_s, limit)

    def _rows_where(
        self, condition: str, ack_timeout_s: float, limit: int, backoff: bool = False
    ) -> list[Row]:
        query = (
            "SELECT seq, kind, topic, payload, created FROM outbox "
            f"WHERE {condition} ORDER BY seq LIMIT ?"  # condition: constants above, never input
        )
        now = time.time()
        args = (now, ack_timeout_s, limit) if backoff else (now - ack_timeout_s, limit)
        with self._lock:
            return [Row(*r) for r in self._db.execute(query, args)]

    def mark_sent(self, seqs: list[int]) -> None:
        if not seqs:
            return
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            for i in range(0, len(seqs), 500):
                part = seqs[i : i + 500]
                marks = ",".join("?" * len(part))
                self._db.execute(
                    f"UPDATE outbox SET sent = ?, attempts = attempts + 1 WHERE seq IN ({marks})",
                    [now, *part],
                )
            self._db.execute("COMMIT")
            self.sent_upto = max(self.sent_upto, max(seqs))

    def ack(self, epoch: str, seq: int) -> int:
        """The cloud has committed everything up to ``seq`` of ``epoch``: delete it.

        An ack is believed only for what this outbox has sent: one above the highest seq
        ever sent, or one covering rows never sent, cannot come from a cloud that stored
        them. It is ignored and counted (``acks_rejected``), so a forged ack can neither
        delete undelivered rows nor raise ``acked_seq`` above the real acks that follow."""
        if epoch != self.epoch:
            return 0  # an acknowledgement for an earlier outbox (before a reset)
        with self._lock:
            if seq <= self.acked_seq:
                return 0
            unsent = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE seq <= ? AND sent IS NULL", (seq,)
            ).fetchone()[0]
            if seq > self.sent_upto or unsent:
                self.acks_rejected += 1
                log.warning(
                    "ignored an ack for seq %d: highest sent %d, %d unsent rows at or below it",
                    seq,
                    self.sent_upto,
                    unsent,
                )
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox WHERE seq <= ?", (seq,)
            ).fetchone()
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))
            self.acked_seq = seq
            self._set_meta("acked_seq", seq)
            self._note_deleted_locked(seq)
            self._db.execute("COMMIT")
            self._rows -= int(row[0])
            self._bytes -= int(row[1])
            return int(row[0])

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def stats(self) -> OutboxStats:
        with self._lock:
            row = self._db.execute("SELECT MIN(seq) FROM outbox").fetchone()
            min_seq = self._next_seq if row[0] is None else int(row[0])
            return OutboxStats(
                self._rows, self._bytes, min_seq, self._next_seq, self.dropped, self.acked_seq
            )

    def close(self) -> None:
        with self._lock:
            # A clean stop: the next run starts right after the last seq used.
            self._set_meta("reserved_upto", self._next_seq - 1)
            self._db.close()
