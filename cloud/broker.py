"""An embedded MQTT broker for the demo: a local `mosquitto` when one is installed,
otherwise amqtt (pure Python; fine for a demo, not for production)."""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _wait_port(port: int, timeout: float = 10.0) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _run_as(data_dir: Path) -> str:
    """The ``user`` line, and a data directory that user can write.

    Mosquitto started as root drops to the ``mosquitto`` user before it opens its
    persistence file; a root-owned directory then fails every save ("Permission denied"
    in its log only) and retained messages and sessions are lost on restart."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return ""  # no privilege drop: the broker writes as the user who started it
    try:
        account = pwd.getpwnam("mosquitto")
    except KeyError:
        return "user root\n"  # no account to drop to (the demo on a bare root shell)
    if not _enterable(data_dir.resolve().parent, account.pw_uid, account.pw_gid):
        log.info("embedded broker runs as root: user mosquitto cannot reach %s", data_dir)
        return "user root\n"
    for path in [data_dir, *data_dir.iterdir()]:
        os.chown(path, account.pw_uid, account.pw_gid)
    return "user mosquitto\n"


def _enterable(directory: Path, uid: int, gid: int) -> bool:
    """Whether ``uid`` may traverse every directory down to ``directory``."""
    for d in [directory, *directory.parents]:
        st = d.stat()
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
    return True


class EmbeddedBroker:
    def __init__(self, port: int, data_dir: Path, prefer: str = "auto") -> None:
        self.port = port
        self.data_dir = data_dir
        self.prefer = prefer
        self.kind = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None

    def start(self) -> None:
        binary = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if binary and self.prefer in ("auto", "mosquitto"):
            self._start_mosquitto(binary)
        else:
            self._start_amqtt()
        if not _wait_port(self.port):
            raise RuntimeError(f"embedded {self.kind} broker did not listen on {self.port}")

    def _start_mosquitto(self, binary: str) -> None:
        self.kind = "mosquitto"
        conf_dir = Path(tempfile.mkdtemp(prefix="ew-demo-broker-"))
        conf = conf_dir / "mosquitto.conf"
        # Demo only: anonymous on localhost. Production uses deploy/mosquitto (passwords, ACL).
        conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
            f"persistence true\npersistence_location {self.data_dir}/\n"
            "max_queued_messages 100000\n" + _run_as(self.data_dir)
        )
        self._proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _start_amqtt(self) -> None:
        from amqtt.broker import Broker

        self.kind = "amqtt"
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._broker = Broker(config, loop=self._loop)
            self._loop.run_until_complete(self._broker.start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="amqtt", daemon=True)
        self._thread.start()
        ready.wait(10)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._loop is not None and self._broker is not None:
            fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
            try:
                fut.result(5)
            except Exception:  # shutting down anyway
                log.debug("amqtt shutdown", exc_info=True)
            self._loop.call_soon_threadsafe(self._loop.stop)
