"""Stopping services on SIGTERM (Kubernetes, systemd, docker stop) and SIGINT (Ctrl-C)."""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets. Call it before starting the service: a signal
    during start-up then means a clean stop instead of the default sudden death."""
    stop = threading.Event()

    def handler(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop
