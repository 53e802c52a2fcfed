"""Security headers on every response, and a Content-Security-Policy with a fresh nonce on
every HTML page.

The pages are built by the app (Jinja2 with autoescape, Folium's map skeleton) and every
device-controlled value reaches a script only as JSON data, so the only ``<script`` tags
in a page are the app's own. This middleware gives each of them the request's nonce; a
script injected through any value would have no nonce and the browser refuses to run it,
as it refuses inline event handlers and ``javascript:`` URLs.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import urlsplit

NONCE_BYTES = 16
_SCRIPT_TAG = re.compile(rb"<script(?=[\s>])", re.IGNORECASE)

STATIC_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_STATIC_NAMES = {name for name, _ in STATIC_HEADERS}


def tile_origins(*urls: str) -> list[str]:
    """The origins a configured tile layer loads images from (for img-src)."""
    out = []
    for url in urls:
        if not url:
            continue
        parts = urlsplit(url.replace("{s}", "a"))
        if parts.scheme in ("http", "https") and parts.netloc:
            host = parts.netloc
            if url.startswith(f"{parts.scheme}://{{s}}."):
                host = "*." + host.split(".", 1)[1]  # {s}.tile.example.org: subdomains
            out.append(f"{parts.scheme}://{host}")
    return out


def content_security_policy(nonce: str, image_origins: list[str]) -> str:
    images = " ".join(["'self'", "data:", "blob:", *image_origins])
    return "; ".join(
        [
            "default-src 'self'",
            f"script-src 'self' 'nonce-{nonce}'",
            "style-src 'self' 'unsafe-inline'",  # Leaflet and Folium position with styles
            f"img-src {images}",
            "connect-src 'self'",
            "font-src 'self' data:",
            "worker-src 'self' blob:",  # ReDoc's search worker
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


class SecurityHeaders:
    """Pure ASGI middleware (no buffering of non-HTML responses: CSV and audio stream)."""

    def __init__(self, app: Any, image_origins: list[str] | None = None) -> None:
        self.app = app
        self.image_origins = image_origins or []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(NONCE_BYTES)
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []
        html = False

        async def wrapped(message: Any) -> None:
            nonlocal start, html
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() not in _STATIC_NAMES
                ]
                headers.extend(STATIC_HEADERS)
                content_type = dict(headers).get(b"content-type", b"")
                html = content_type.startswith(b"text/html")
                if not html:
                    await send({**message, "headers": headers})
                    return
                csp = content_security_policy(nonce, self.image_origins)
                headers.append((b"content-security-policy", csp.encode()))
                start = {**message, "headers": headers}
                return
            if not html:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return  # pages are built whole in memory; buffering one adds no risk
            body = b"".join(chunks)
            body = _SCRIPT_TAG.sub(b'<script nonce="' + nonce.encode() + b'"', body)
            assert start is not None
            headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"] + [
                (b"content-length", str(len(body)).encode())
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, wrapped)
