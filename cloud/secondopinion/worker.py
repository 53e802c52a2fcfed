"""`earwitness second-opinion`: claim clips, score them with every available backend,
store the opinions and the agreement, fill the inference rows' second-opinion columns."""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from earwitness.cloud.clipstore import ClipStore, ClipStoreError, ClipStoreUnavailable
from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.errors import is_transient
from earwitness.cloud.db.models import Clip
from earwitness.cloud.db.repo import clips as clip_queue
from earwitness.cloud.db.repo import inferences
from earwitness.cloud.db.repo import opinions as opinion_repo
from earwitness.cloud.secondopinion.backends import Backend, Opinion
from earwitness.shared import audio
from earwitness.shared.errors import EarwitnessError
from earwitness.shared.labels import top_group
from earwitness.shared.service import DEFAULT_STOP_TIMEOUT_S, Health, Service

log = logging.getLogger(__name__)

DB_RETRY_MIN_S, DB_RETRY_MAX_S = 0.1, 10.0
"""Backoff after a transient database error: a certification conflict clears at once, an
outage may last minutes."""


def _group_name(groups: dict[str, float]) -> str | None:
    top = top_group(groups)
    return top[0] if top else None


class Worker:
    def __init__(
        self,
        engine: Engine,
        store: ClipStore,
        backends: list[Backend],
        lease_s: float = 60.0,
        budget_per_minute: int = 0,
        name: str | None = None,
    ) -> None:
        if not backends:
            raise EarwitnessError("no second-opinion backend is available")
        self.engine = engine
        self.store = store
        self.backends = backends
        self.lease_s = lease_s
        self.budget = budget_per_minute
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}"
        self.processed = 0
        self.failed = 0
        self.store_errors = 0  # times the clip store was down and claimed clips were released
        self.db_retries = 0  # transient database errors waited out
        self._recent: deque[float] = deque()

    def _within_budget(self) -> bool:
        if not self.budget:
            return True
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 60:
            self._recent.popleft()
        return len(self._recent) < self.budget

    def run_once(self, limit: int = 1) -> int:
        """Claim and process up to ``limit`` clips; returns how many were claimed."""
        if not self._within_budget():
            return 0
        with transaction(self.engine) as session:
            clips = clip_queue.claim(session, self.name, self.lease_s, limit)
        for i, clip in enumerate(clips):
            self._recent.append(time.monotonic())
            try:
                self.process(clip)
            except ClipStoreUnavailable as exc:
                with transaction(self.engine) as session:
                    clip_queue.release(session, clips[i:], self.name)
                self.store_errors += 1
                log.error("clip store unavailable, %d clip(s) released: %s", len(clips) - i, exc)
                return 0  # the caller idles before trying again
        return len(clips)

    def process(self, clip: Clip) -> None:
        """Score one claimed clip. A clip that cannot be read or scored counts an attempt;
        ClipStoreUnavailable propagates, so the caller releases the clip untouched."""
        try:
            wave = audio.decode_bytes(self.store.get(clip.storage_key), f"clip {clip.clip_id}")
            opinions = [b.score(wave) for b in self.backends]
        except ClipStoreUnavailable:
            raise
        except (EarwitnessError, ClipStoreError) as exc:
            with transaction(self.engine) as session:
                status = clip_queue.fail(session, clip, self.name, str(exc))
            self.failed += status == "failed"
            log.warning("clip %s: %s (%s)", clip.clip_id, exc, status)
            return
        self._store(clip, opinions)
        self.processed += 1

    def _store(self, clip: Clip, opinions: list[Opinion]) -> None:
        now = datetime.now(UTC)
        edge_group = _group_name(clip.edge_groups)
        rows: list[dict[str, Any]] = []
        for op in opinions:
            second_group = _group_name(op.groups)
            rows.append(
                {
                    "clip_id": clip.id,
                    "device_id": clip.device_id,
                    "backend": op.backend,
                    "model_id": op.model_id,
                    "label": op.label,
                    "label_index": op.label_index,
                    "score": op.score,
                    "group_scores": {k: round(v, 4) for k, v in op.groups.items()},
                    "edge_label": clip.edge_label,
                    "edge_score": clip.edge_score,
                    "edge_group": edge_group,
                    "top1_agree": op.label_index == clip.edge_label_index,
                    "group_agree": None
                    if edge_group is None and second_group is None
                    else edge_group == second_group,
                    "created_at": now,
                }
            )
        first = rows[0]
        with transaction(self.engine) as session:
            opinion_repo.add_many(session, rows)
            clip_queue.mark_done(session, clip.id, self.name)
            inferences.set_second_opinion(
                session,
                clip.device_id,
                clip.window_start,
                first["label"],
                first["score"],
                first["top1_agree"],
            )

    def run(self, stop: threading.Event, idle_s: float = 1.0, batch: int = 8) -> None:
        """Until ``stop``. A transient database error (a lost connection, a deadlock, a
        Galera certification conflict between two workers' claims on different nodes)
        rolled its transaction back: wait and go on. A clip whose result could not be
        stored stays leased to this worker and is claimed again when the lease ends."""
        backoff = DB_RETRY_MIN_S
        while not stop.is_set():
            try:
                claimed = self.run_once(limit=batch)
            except SQLAlchemyError as exc:
                if not is_transient(exc):
                    raise
                self.db_retries += 1
                log.warning(
                    "database error, retrying in %.1f s: %s",
                    backoff,
                    str(exc).splitlines()[0][:200],
                )
                stop.wait(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, DB_RETRY_MAX_S)
                continue
            backoff = DB_RETRY_MIN_S
            if claimed == 0:
                stop.wait(idle_s)


class SecondOpinionService(Service):
    """The worker on a thread of its own, with the common service shape."""

    def __init__(self, worker: Worker, idle_s: float = 1.0, batch: int = 8) -> None:
        self.worker = worker
        self.idle_s = idle_s
        self.batch = batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="second-opinion", daemon=True)
        self._error: str | None = None

    def _run(self) -> None:
        try:
            self.worker.run(self._stop, self.idle_s, self.batch)
        except Exception as exc:  # reported by health(); the process supervisor restarts
            self._error = f"{type(exc).__name__}: {exc}"
            log.exception("second-opinion worker stopped")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def health(self) -> Health:
        w = self.worker
        alive = self._thread.is_alive() or self._stop.is_set()
        return Health(
            alive and self._error is None,
            {
                "processed": w.processed,
                "failed": w.failed,
                "store_errors": w.store_errors,
                "db_retries": w.db_retries,
                "error": self._error,
            },
        )
