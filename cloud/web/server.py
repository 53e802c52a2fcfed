"""The web app served by uvicorn on a thread, with the common service shape."""

from __future__ import annotations

import threading
import time
from typing import Any

from earwitness.shared.errors import ConfigError
from earwitness.shared.service import DEFAULT_STOP_TIMEOUT_S, Health, Service

STARTUP_TIMEOUT_S = 10.0  # uvicorn binds within milliseconds; this only catches a hang


class WebService(Service):
    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self.host, self.port = host, port
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, name="web", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> None:
        """Returns once the port is bound; a port that cannot be bound is a ConfigError."""
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive():
                raise ConfigError(
                    f"web: cannot listen on {self.host}:{self.port} (port in use or not"
                    " allowed): set web.port / --port"
                )
            if time.monotonic() > deadline:
                raise ConfigError(f"web: not listening on {self.host}:{self.port} after start")
            time.sleep(0.02)

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)

    def health(self) -> Health:
        ok = self._thread.is_alive() and bool(self._server.started)
        return Health(ok, {"url": self.url, "listening": ok})

    def wait(self) -> None:
        """Block until the server stops (its own signal handling ends it)."""
        self._thread.join()
