"""`earwitness second-opinion`: claim clips, score them with every available backend,
store the opinions and the agreement, fill the inference rows' second-opinion columns."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from datetime import UTC, datetime

from sqlalchemy import Engine, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from cloud.clipstore import ClipStore, ClipStoreError, ClipStoreUnavailable
from cloud.db.models import Clip, Inference, SecondOpinion, table_of
from cloud.secondopinion import queue
from cloud.secondopinion.backends import Backend, Opinion
from shared import audio
from shared.errors import EarwitnessError

log = logging.getLogger(__name__)

GROUP_MIN = 0.2  # a group counts as the clip's group only above this score


def top_group(groups: dict[str, float]) -> str | None:
    if not groups:
        return None
    name = max(groups, key=lambda g: groups[g])
    return name if groups[name] >= GROUP_MIN else None


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
        clips = queue.claim(self.engine, self.name, self.lease_s, limit)
        for i, clip in enumerate(clips):
            self._recent.append(time.monotonic())
            try:
                self.process(clip)
            except ClipStoreUnavailable as exc:
                queue.release(self.engine, clips[i:], self.name)
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
            status = queue.fail(self.engine, clip, self.name, str(exc))
            self.failed += status == "failed"
            log.warning("clip %s: %s (%s)", clip.clip_id, exc, status)
            return
        self._store(clip, opinions)
        self.processed += 1

    def _store(self, clip: Clip, opinions: list[Opinion]) -> None:
        now = datetime.now(UTC)
        edge_group = top_group(clip.edge_groups)
        rows = []
        for op in opinions:
            second_group = top_group(op.groups)
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
        with self.engine.begin() as conn:
            table = table_of(SecondOpinion)
            if self.engine.dialect.name in ("mysql", "mariadb"):
                stmt = mysql_insert(table)
                stmt = stmt.on_duplicate_key_update(clip_id=stmt.inserted.clip_id)
            else:
                stmt = sqlite_insert(table).on_conflict_do_nothing()  # type: ignore[assignment]
            conn.execute(stmt, rows)
            conn.execute(
                update(Clip)
                .where(Clip.id == clip.id, Clip.worker == self.name)
                .values(status="done", lease_until=None, error=None)
            )
            conn.execute(
                update(Inference)
                .where(
                    Inference.device_id == clip.device_id,
                    Inference.window_start == clip.window_start,
                )
                .values(
                    second_label=first["label"],
                    second_score=first["score"],
                    second_agree=first["top1_agree"],
                )
            )

    def run(self, stop: threading.Event, idle_s: float = 1.0, batch: int = 8) -> None:
        while not stop.is_set():
            if self.run_once(limit=batch) == 0:
                stop.wait(idle_s)
