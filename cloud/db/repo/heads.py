"""Custom heads uploaded for devices: stored once by the sha256 of their file."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from sqlalchemy import desc, or_, select
from sqlalchemy.orm import Session

from earwitness.cloud.db.dialect import insert_ignore
from earwitness.cloud.db.models import HeadArtifact, table_of
from earwitness.shared.heads import parse_head


def add(session: Session, blob: bytes, uploaded_by: str | None) -> tuple[HeadArtifact, bool]:
    """Store a head file (checked: it must parse). Returns the row and whether it is new."""
    head = parse_head(blob, "uploaded head")
    sha = hashlib.sha256(blob).hexdigest()
    inserted = insert_ignore(
        session,
        table_of(HeadArtifact),
        [
            {
                "sha256": sha,
                "name": head.name[:64],
                "head_id": head.head_id,
                "classes": ",".join(head.classes)[:400],
                "model_id": head.model_id,
                "size_bytes": len(blob),
                "content": blob,
                "uploaded_at": datetime.now(UTC),
                "uploaded_by": uploaded_by,
            }
        ],
        "sha256",
    )
    row = session.scalars(select(HeadArtifact).where(HeadArtifact.sha256 == sha)).one()
    return row, bool(inserted)


def listing(session: Session, limit: int = 200) -> list[HeadArtifact]:
    q = select(HeadArtifact).order_by(desc(HeadArtifact.uploaded_at), desc(HeadArtifact.id))
    return list(session.scalars(q.limit(limit)))


def find(session: Session, key: str) -> HeadArtifact | None:
    """By full sha256, a unique sha256 prefix (8+ hex digits) or the newest of a name."""
    matches = [HeadArtifact.sha256 == key, HeadArtifact.name == key]
    if len(key) >= 8:
        matches.append(HeadArtifact.sha256.startswith(key))
    q = select(HeadArtifact).where(or_(*matches))
    rows = list(session.scalars(q.order_by(desc(HeadArtifact.uploaded_at), desc(HeadArtifact.id))))
    exact = [r for r in rows if r.sha256 == key]
    if exact:
        return exact[0]
    by_prefix = [r for r in rows if r.sha256.startswith(key)]
    if len(by_prefix) > 1:
        return None  # ambiguous
    return by_prefix[0] if by_prefix else (rows[0] if rows else None)


def content(session: Session, sha256: str) -> bytes | None:
    q = select(HeadArtifact.content).where(HeadArtifact.sha256 == sha256)
    blob = session.scalar(q)
    return bytes(blob) if blob is not None else None
