"""Store processes: validation and database writes in child processes.

One Python process holds one GIL: paho's network thread and the writer took turns on a
single core (~130 µs of Python per message). In a child process the writer gets a core
of its own while the parent only receives and acknowledges; the MQTT session, and with it
the acknowledge-after-commit contract, stays in the parent. A batch crosses the pipe as
(topic, payload, received) tuples and comes back as a WriteResult.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import signal
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from typing import Any

from earwitness.cloud.ingest.store import BatchStore, WriteResult, store_batch
from earwitness.cloud.ingest.validate import Limits, RawMessage

log = logging.getLogger(__name__)

Wire = list[tuple[str, bytes, datetime]]

SPAWN = mp.get_context("spawn")  # never fork a process that runs threads (paho, logging)


@dataclass(frozen=True)
class StoreProcessConfig:
    database_url: str
    clips_url: str
    s3_endpoint: str | None
    limits: Limits
    max_retries: int


class StoreProcessError(Exception):
    """The child could not store the batch (database down, ...): retry it later."""


def _child_main(conn: Connection, cfg: StoreProcessConfig) -> None:
    # The parent decides when this process ends (it sends None, or its end of the pipe
    # closes when it dies). Ctrl-C in a terminal, or a SIGTERM to the whole process
    # group, must not end a batch half-written while the parent waits for it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from earwitness.cloud.clipstore import open_store
    from earwitness.cloud.db.engine import make_engine

    engine = make_engine(cfg.database_url)
    store = open_store(cfg.clips_url, cfg.s3_endpoint)
    batches = BatchStore(engine, cfg.max_retries)
    conn.send(("ready", None))
    while True:
        try:
            batch: Wire | None = conn.recv()
        except EOFError:
            return  # the parent is gone
        if batch is None:
            return
        try:
            raw = [RawMessage(topic, payload, received) for topic, payload, received in batch]
            result = store_batch(batches, raw, store, cfg.limits)
            conn.send(("ok", result))
        except Exception as exc:  # reported to the parent, which holds the batch and retries
            conn.send(("error", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"))


class StoreProcess:
    """The parent's handle on one child: ``submit(batch)``, then ``result()`` waits for the
    commit."""

    def __init__(self, cfg: StoreProcessConfig) -> None:
        self.cfg = cfg
        self._conn: Connection | None = None
        self._proc: Any = None

    def start(self, timeout_s: float = 60.0) -> None:
        """Spawn the child and wait until it has imported everything: the first batch
        must not wait for an interpreter to start."""
        parent, child = SPAWN.Pipe()
        self._proc = SPAWN.Process(
            target=_child_main, args=(child, self.cfg), name="ingest-store-process", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent
        if not parent.poll(timeout_s):
            log.warning("store process not ready after %.0f s; continuing", timeout_s)
            return
        try:
            parent.recv()  # ("ready", None)
        except EOFError:
            self._conn = None
            log.error("store process exited while starting (code %s)", self._proc.exitcode)

    def submit(self, batch: list[RawMessage]) -> None:
        """Hand a batch to the child; ``result()`` waits for its commit. Between the two
        the parent is free (it acknowledges the previous batch meanwhile)."""
        if self._conn is None or self._proc is None or not self._proc.is_alive():
            if self._proc is not None:
                log.error("store process exited (code %s); starting a new one", self._proc.exitcode)
                self._proc.join(1.0)
            self.start()
            if self._conn is None:
                raise StoreProcessError("store process could not start")
        try:
            self._conn.send([(m.topic, m.payload, m.received) for m in batch])
        except OSError as exc:
            self._conn = None
            raise StoreProcessError(f"store process lost: {exc!r}") from exc

    def result(self) -> WriteResult:
        if self._conn is None:
            raise StoreProcessError("store process lost before it answered")
        try:
            status, value = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._conn = None
            raise StoreProcessError(f"store process lost: {exc!r}") from exc
        if status != "ok":
            raise StoreProcessError(value)
        result: WriteResult = value
        return result

    def close(self, timeout_s: float = 5.0) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
        if self._proc is not None:
            self._proc.join(timeout_s)
            if self._proc.is_alive():  # stuck in a write: it ignores SIGTERM, by design
                self._proc.kill()
                self._proc.join(timeout_s)
