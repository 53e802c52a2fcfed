"""API tokens: random secrets shown once, stored as sha256, with read or admin scope."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Engine, select, update

from cloud.db.models import ApiToken

Scope = Literal["read", "admin"]
TOKEN_PREFIX = "ew_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(engine: Engine, name: str, scope: Scope) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(
            ApiToken.__table__.insert().values(  # type: ignore[attr-defined]
                name=name,
                token_hash=hash_token(token),
                scope=scope,
                created_at=datetime.now(UTC),
                revoked=False,
            )
        )
    return token


def revoke_token(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        result = conn.execute(update(ApiToken).where(ApiToken.name == name).values(revoked=True))
    return bool(result.rowcount)


def lookup(engine: Engine, token: str) -> Scope | None:
    """The scope of a valid, unrevoked token, else None (constant-time on the hash)."""
    digest = hash_token(token)
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.scope, ApiToken.token_hash, ApiToken.revoked).where(
                ApiToken.token_hash == digest
            )
        ).first()
    if row is None or row.revoked or not secrets.compare_digest(row.token_hash, digest):
        return None
    return row.scope


def token_from_header(authorization: str | None) -> str | None:
    """``Bearer <token>``, or HTTP basic auth with the token as the password (browsers)."""
    if not authorization:
        return None
    kind, _, value = authorization.partition(" ")
    if kind.lower() == "bearer":
        return value.strip() or None
    if kind.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None
