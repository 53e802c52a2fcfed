"""The filters every listing shares (time range, label, group, device, score) and the
keyset cursor of paged listings."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class QueryError(ValueError):
    """A filter the API answers with 422."""


@dataclass(frozen=True)
class Filters:
    start: datetime | None = None
    end: datetime | None = None
    label: str | None = None
    group: str | None = None
    device: str | None = None
    min_score: float | None = None
    custom: str | None = None  # a custom head's class the device detected

    def check(self, max_range_days: float) -> Filters:
        end = self.end or datetime.now(UTC)
        try:
            start = self.start or end - timedelta(days=1)
        except OverflowError as exc:  # e.g. end=0001-01-01: no day before it
            raise QueryError("time range out of bounds") from exc
        if start >= end:
            raise QueryError("start must be before end")
        if end - start > timedelta(days=max_range_days):
            raise QueryError(f"time range longer than {max_range_days:g} days")
        return Filters(start, end, self.label, self.group, self.device, self.min_score, self.custom)


def encode_cursor(ts: datetime, row_id: int) -> str:
    return base64.urlsafe_b64encode(f"{ts.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        ts_text, _, id_text = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        ts = datetime.fromisoformat(ts_text)
        if ts.tzinfo is None:
            raise ValueError("naive")
        return ts, int(id_text)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise QueryError("invalid cursor") from exc
