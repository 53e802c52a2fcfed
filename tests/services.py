"""Real services for integration tests: MariaDB, Mosquitto (shared or private), never mocks.

A missing service fails the test with a message saying what to start; it never skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

MARIADB_HOST = os.environ.get("EARWITNESS_TEST_MARIADB_HOST", "127.0.0.1")
MARIADB_PORT = int(os.environ.get("EARWITNESS_TEST_MARIADB_PORT", "3306"))
MARIADB_USER = os.environ.get("EARWITNESS_TEST_MARIADB_USER", "root")
MQTT_HOST = os.environ.get("EARWITNESS_TEST_MQTT_HOST", "127.0.0.1")
MQTT_PORT = int(os.environ.get("EARWITNESS_TEST_MQTT_PORT", "1883"))


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require(host: str, port: int, what: str) -> None:
    if not port_open(host, port):
        pytest.fail(f"{what} is not reachable on {host}:{port}; start it (see README, Testing)")


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def mariadb_admin_url(database: str = "") -> str:
    return f"mysql+pymysql://{MARIADB_USER}@{MARIADB_HOST}:{MARIADB_PORT}/{database}"


@contextmanager
def mariadb_database() -> Iterator[str]:
    """A fresh database on the real MariaDB, dropped afterwards."""
    import pymysql

    require(MARIADB_HOST, MARIADB_PORT, "MariaDB")
    name = unique("ew_test_")
    conn = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user=MARIADB_USER)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        yield mariadb_admin_url(name)
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        conn.close()


_spawned: list[subprocess.Popen[bytes]] = []


def spawn(
    cmd: list[str], env: dict[str, str], new_session: bool = False
) -> subprocess.Popen[bytes]:
    """Start a service process for a test; conftest kills it after the test if it is
    still running, so a failing test never leaves an agent or consumer behind.
    ``new_session``: its own process group, as a terminal's foreground job has."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=new_session,
    )
    _spawned.append(proc)
    return proc


def reap_spawned() -> None:
    for proc in _spawned:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    _spawned.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PrivateBroker:
    """A Mosquitto of our own on a free port, so a test can kill and restart it."""

    def __init__(self, extra_conf: str = "", port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            pytest.fail("mosquitto binary not found (apt-get install mosquitto)")
        self.binary = binary
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="ew-mosq-"))
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            "max_queued_messages 0\n"
            # Started as root, mosquitto drops to its own user, which cannot write this
            # root-only directory: persistence would silently be off (cloud/broker.py).
            + ("user root\n" if os.geteuid() == 0 and "\nuser " not in extra_conf else "")
            + extra_conf
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"private mosquitto did not start on port {self.port}")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
