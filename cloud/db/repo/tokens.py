"""API tokens, stored as their sha256 only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from earwitness.cloud.db.models import ApiToken, table_of


@dataclass(frozen=True)
class StoredToken:
    name: str
    scope: str
    token_hash: str
    revoked: bool


class NameTaken(ValueError):
    """Names are unique (a review records the token's name); a new token needs its own."""


def add(session: Session, name: str, token_hash: str, scope: str) -> None:
    try:
        session.execute(
            table_of(ApiToken)
            .insert()
            .values(
                name=name,
                token_hash=token_hash,
                scope=scope,
                created_at=datetime.now(UTC),
                revoked=False,
            )
        )
    except IntegrityError:
        raise NameTaken(
            f"a token named '{name}' exists (revoked or not): choose another name"
        ) from None


def revoke(session: Session, name: str) -> bool:
    result = session.execute(update(ApiToken).where(ApiToken.name == name).values(revoked=True))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def by_hash(session: Session, token_hash: str) -> StoredToken | None:
    row = session.execute(
        select(ApiToken.name, ApiToken.scope, ApiToken.token_hash, ApiToken.revoked).where(
            ApiToken.token_hash == token_hash
        )
    ).first()
    return None if row is None else StoredToken(row.name, row.scope, row.token_hash, row.revoked)
