"""API tokens: random secrets shown once, stored as sha256, with read or admin scope."""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from earwitness.cloud.db.engine import transaction
from earwitness.cloud.db.repo import tokens

Scope = Literal["read", "admin"]
TOKEN_PREFIX = "ew_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TokenNameTaken = tokens.NameTaken


def create_token(engine: Engine, name: str, scope: Scope) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(engine) as session:
        tokens.add(session, name, hash_token(token), scope)
    return token


def revoke_token(engine: Engine, name: str) -> bool:
    with transaction(engine) as session:
        return tokens.revoke(session, name)


@dataclass(frozen=True)
class Caller:
    """Who is asking: the token's name (recorded as the reviewer) and its scope."""

    name: str
    scope: Scope


ANONYMOUS_ADMIN = Caller("anonymous (auth off)", "admin")  # development and the demo only


def lookup(session: Session, token: str) -> Caller | None:
    """The caller behind a valid, unrevoked token, else None (constant-time on the hash)."""
    digest = hash_token(token)
    row = tokens.by_hash(session, digest)
    if row is None or row.revoked or not secrets.compare_digest(row.token_hash, digest):
        return None
    return Caller(row.name, "admin" if row.scope == "admin" else "read")


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
