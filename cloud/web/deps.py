"""FastAPI dependencies: settings, the request's database session, clip store, token checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from earwitness.cloud.clipstore import ClipStore
from earwitness.cloud.db.engine import transaction
from earwitness.cloud.settings import CloudSettings
from earwitness.cloud.web import auth
from earwitness.cloud.web.spectrogram import SpectrogramCache


@dataclass
class AppState:
    settings: CloudSettings
    engine: Engine
    store: ClipStore
    spectrograms: SpectrogramCache = field(default_factory=SpectrogramCache)


def get_state(request: Request) -> AppState:
    return request.app.state.ew


StateDep = Annotated[AppState, Depends(get_state)]


def get_session(state: StateDep) -> Iterator[Session]:
    """One transaction per request, shared by the token check and the route: committed
    when the route returns, rolled back when it raises."""
    with transaction(state.engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def _check(
    request: Request, state: AppState, session: Session, needed: auth.Scope, browser: bool
) -> auth.Caller:
    if not state.settings.web.auth:
        return auth.ANONYMOUS_ADMIN
    token = auth.token_from_header(request.headers.get("authorization"))
    challenge = 'Basic realm="Earwitness"' if browser else "Bearer"
    if token is None:
        raise HTTPException(401, "an API token is required", {"WWW-Authenticate": challenge})
    caller = auth.lookup(session, token)
    if caller is None:
        raise HTTPException(401, "invalid or revoked token", {"WWW-Authenticate": challenge})
    if needed == "admin" and caller.scope != "admin":
        raise HTTPException(403, "this needs a token with admin scope")
    return caller


def require_read(request: Request, state: StateDep, session: SessionDep) -> auth.Caller:
    return _check(request, state, session, "read", browser=False)


def require_admin(request: Request, state: StateDep, session: SessionDep) -> auth.Caller:
    return _check(request, state, session, "admin", browser=False)


def require_browser(request: Request, state: StateDep, session: SessionDep) -> auth.Caller:
    return _check(request, state, session, "read", browser=True)


ReadDep = Annotated[auth.Caller, Depends(require_read)]
AdminDep = Annotated[auth.Caller, Depends(require_admin)]
BrowserDep = Annotated[auth.Caller, Depends(require_browser)]
