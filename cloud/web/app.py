"""`earwitness web`: FastAPI app factory. Migrations are a prestart step, never run here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine

from earwitness.cloud.clipstore import ClipStore
from earwitness.cloud.settings import CloudSettings
from earwitness.cloud.web import api, pages
from earwitness.cloud.web.deps import AppState
from earwitness.cloud.web.security import SecurityHeaders, tile_origins
from earwitness.shared import __version__

STATIC = Path(__file__).resolve().parent / "static"


class BodyLimit:
    """413 for request bodies above the limit, declared or streamed (pure ASGI)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._reject(send)
                return
        received = 0

        async def limited() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await self._reject(send)

    @staticmethod
    async def _reject(send: Any) -> None:
        body = b'{"detail":"request body too large"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def create_app(settings: CloudSettings, engine: Engine, store: ClipStore) -> FastAPI:
    needed = [STATIC / "vendor" / "leaflet" / "leaflet.js", STATIC / "vendor" / "swagger"]
    if not all(path.exists() for path in needed):
        from earwitness.shared.errors import ConfigError

        raise ConfigError(
            f"web assets missing in {STATIC / 'vendor'}: run `make assets`"
            " (cloud/web/assets/install.sh) to fetch Leaflet from the npm registry"
        )
    app = FastAPI(
        title="Earwitness",
        version=__version__,
        description="Devices, detections, clips and second opinions.",
        docs_url=None,  # served below from local assets: no CDN, works air-gapped
        redoc_url=None,
    )
    app.state.ew = AppState(settings, engine, store)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Earwitness API",
            swagger_js_url="/static/vendor/swagger/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title="Earwitness API",
            redoc_js_url="/static/vendor/redoc/redoc.standalone.js",
            redoc_favicon_url="/favicon.ico",
            with_google_fonts=False,
        )

    if settings.web.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.web.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.web.max_request_bytes)
    app.add_middleware(SecurityHeaders, image_origins=tile_origins(settings.web.tile_url))
    return app
