"""A small Prometheus text-format registry and a /healthz + /metrics HTTP server.

Enough for Kubernetes probes and a Prometheus scrape without another dependency on the
device image.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable
from typing import Any

Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


class Registry:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._lock = threading.Lock()
        self._values: dict[str, dict[Labels, float]] = {}
        self._help: dict[str, tuple[str, str]] = {}
        self._callbacks: dict[str, Callable[[], float]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._values.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values.setdefault(name, {})[key] = value

    def gauge_callback(self, name: str, fn: Callable[[], float]) -> None:
        self._callbacks[name] = fn

    def get(self, name: str, **labels: str) -> float:
        key = tuple(sorted(labels.items()))
        with self._lock:
            return self._values.get(name, {}).get(key, 0.0)

    def total(self, name: str) -> float:
        with self._lock:
            return sum(self._values.get(name, {}).values())

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            snapshot = {k: dict(v) for k, v in self._values.items()}
        for name, fn in self._callbacks.items():
            try:
                snapshot[name] = {(): float(fn())}
            except Exception:  # a failing callback must not break the scrape
                continue
        for name in sorted(snapshot):
            full = f"{self.prefix}_{name}"
            kind, text = self._help.get(name, ("untyped", ""))
            if text:
                lines.append(f"# HELP {full} {text}")
            lines.append(f"# TYPE {full} {kind}")
            for labels, value in sorted(snapshot[name].items()):
                lines.append(f"{full}{_fmt_labels(labels)} {value:g}")
        return "\n".join(lines) + "\n"


class HealthServer:
    """``/healthz`` answers 200 while ``check()`` returns (True, detail), else 503."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: Registry,
        check: Callable[[], tuple[bool, dict[str, Any]]],
    ) -> None:
        import json

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/metrics"):
                    body = registry.render().encode()
                    self._send(200, body, "text/plain; version=0.0.4")
                elif self.path.startswith("/healthz") or self.path.startswith("/readyz"):
                    ok, detail = check()
                    body = json.dumps({"ok": ok, **detail}, default=str).encode()
                    self._send(200 if ok else 503, body, "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="health", daemon=True
        )
        _ = outer

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
