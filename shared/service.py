"""The one shape every long-running part has: edge agent, ingest, second opinion, web.

``start()`` returns once the service runs in its own threads; ``stop(timeout)`` finishes
or hands back the work in flight within about ``timeout`` seconds; ``health()`` is what
``/healthz`` reports. As a context manager a service stops even when the block raises,
so a failed start-up never leaves threads or child processes behind.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Any, NamedTuple, Self

DEFAULT_STOP_TIMEOUT_S = 5.0
"""Long enough to commit a batch in flight, short enough for systemd's default 90 s."""


class Health(NamedTuple):
    """``ok`` and the figures behind it (a tuple, so ``ok, details = health()`` works)."""

    ok: bool
    details: dict[str, Any]


class Service(ABC):
    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT_S) -> None: ...

    @abstractmethod
    def health(self) -> Health: ...

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
