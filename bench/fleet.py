"""Fleet simulator: thousands of devices speaking the real device protocol to a private
Mosquitto and a real ingest writing into a fresh MariaDB database, on this machine.

Each simulated device is one MQTT 3.1.1 connection in a single asyncio process (a small
codec below; a paho client per device would cost a thread each). A device does what the
edge agent does on the wire (docs/protocol.md): client id = device id, a retained
``online`` status on connect with an ``offline`` last will, a subscription to its retained
``ack`` topic, one inference every ``--period`` seconds and a heartbeat every
``--heartbeat`` seconds (at a random phase, or ``--heartbeats together``; each interval
within the agent's +-10 %), each with the outbox's (epoch, seq) and uuid5 message id, kept
until an ack covers it, re-sent after a reconnect (at most ``ACK_WINDOW`` unacknowledged)
and when acks stop moving, and reconnects with the agent's backoff
(``shared.mqtt.reconnect_delay``; ``--backoff doubling`` is paho's own, unjittered).

The private broker enforces the production ACL (deploy/mosquitto/services.acl and the
per-device rules, ``--acl none`` for the anonymous demo broker), so ingest is not sent its
own acks back, as in a deployment.

Phases: connect the fleet over ``--ramp`` s; steady state for ``--steady`` s (latency from
a message's publish to the device receiving the ack that covers it, which is sent only
after the commit: an upper bound of publish-to-commit); a broker outage of ``--outage`` s
(SIGKILL, the worst case: retained acks since the last save are gone too) while devices
keep producing; recovery until every device is connected again and acknowledged for all
it produced before the broker returned; then the devices stop producing, drain, and SQL
checks that every seq of every device is stored exactly once.

    .venv/bin/python bench/fleet.py --devices 10000          # the issue's target
    .venv/bin/python bench/fleet.py --devices 1000 --steady 30 --outage 20   # quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil
import pymysql

from bench._common import device_message, local_mariadb, machine, percentile
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.edge.agent import HEARTBEAT_JITTER
from earwitness.edge.publisher import ACK_WINDOW
from earwitness.shared.mqtt import reconnect_delay, remaining_length
from earwitness.shared.topics import Kind
from tests.services import PrivateBroker, port_open

MESSAGE_TABLES = ("inferences", "heartbeats")
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 30.0  # the agent's defaults (shared/config.py)
ACK_TIMEOUT_S = 30.0  # outbox.ack_timeout_s default: resend when acks stopped this long
KEEPALIVE_S = 30
TICK_S = 0.1


def log(message: str) -> None:
    print(f"[fleet {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- a minimal MQTT 3.1.1 codec ------------------------------------------------------------
def _str(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, will_topic: str, will: bytes, keepalive: int) -> bytes:
    flags = 0x02 | 0x04 | 0x08 | 0x20  # clean session, will, will QoS 1, will retained
    body = _str("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body += _str(client_id) + _str(will_topic) + _str(will)
    return b"\x10" + remaining_length(len(body)) + body


def publish_packet(topic: str, payload: bytes, packet_id: int, retain: bool = False) -> bytes:
    body = _str(topic) + struct.pack("!H", packet_id) + payload
    return bytes([0x32 | (1 if retain else 0)]) + remaining_length(len(body)) + body


def subscribe_packet(topic_filter: str, packet_id: int) -> bytes:
    body = struct.pack("!H", packet_id) + _str(topic_filter) + b"\x01"
    return b"\x82" + remaining_length(len(body)) + body


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


# -- one simulated device ----------------------------------------------------------------
@dataclass
class Outboxed:
    seq: int
    payload: bytes
    topic: str
    published_at: float | None = None  # first publish (monotonic), None while offline


@dataclass
class Device:
    fleet: Fleet
    site: str
    id: str
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    next_seq: int = 0
    outbox: deque[Outboxed] = field(default_factory=deque)
    acked: int = -1
    ack_moved_at: float = 0.0
    resend_wait: float = ACK_TIMEOUT_S
    protocol: DeviceProtocol | None = None
    connecting: bool = False
    attempts: int = 0
    packet_id: int = 0
    connects: int = 0
    last_heartbeat: float = 0.0

    @property
    def prefix(self) -> str:
        return f"earwitness/v1/{self.site}/{self.id}"

    def next_packet_id(self) -> int:
        self.packet_id = self.packet_id % 65535 + 1
        return self.packet_id

    # messages
    def produce(self, kind: str) -> None:
        fleet = self.fleet
        seq = self.next_seq
        self.next_seq += 1
        payload = device_message(
            kind,
            self.site,
            self.id,
            self.epoch,
            seq,
            datetime.now(UTC).isoformat(),
            score=round(random.random(), 3),
            lat=fleet.lat(self),
            lon=fleet.lon(self),
            uptime_s=time.monotonic() - fleet.t0,
            version="fleet-sim",
            outbox_rows=len(self.outbox),
            outbox_min_seq=self.acked + 1,
        )
        item = Outboxed(seq, payload, f"{self.prefix}/{kind}")
        self.outbox.append(item)
        self.fleet.produced += 1
        # (with no more rows than the window, one of them this unsent one, the window is
        # open: no need to count)
        if self.protocol is not None and (
            len(self.outbox) <= ACK_WINDOW or self.in_flight() < ACK_WINDOW
        ):
            self.send(item)

    def in_flight(self) -> int:
        return sum(1 for item in self.outbox if item.published_at is not None)

    def send(self, item: Outboxed) -> None:
        assert self.protocol is not None
        if item.published_at is None:
            item.published_at = time.monotonic()
        else:
            self.fleet.resent += 1
        self.protocol.write(publish_packet(item.topic, item.payload, self.next_packet_id()))
        self.fleet.published += 1

    def resend_all(self) -> None:
        """After a (re)connect: what is not acknowledged, oldest first, up to the window."""
        for item in list(self.outbox)[:ACK_WINDOW]:
            self.send(item)

    def on_ack(self, payload: bytes) -> None:
        try:
            ack = json.loads(payload)
        except ValueError:
            return
        if ack.get("epoch") != self.epoch or not isinstance(ack.get("seq"), int):
            return
        seq = ack["seq"]
        if seq <= self.acked:
            return
        now = time.monotonic()
        self.acked, self.ack_moved_at, self.resend_wait = seq, now, ACK_TIMEOUT_S
        fleet = self.fleet
        while self.outbox and self.outbox[0].seq <= seq:
            item = self.outbox.popleft()
            if item.published_at is not None and fleet.measuring:
                fleet.latencies.append(now - item.published_at)
        fleet.acks_received += 1

    def check_overdue(self, now: float) -> None:
        """Acks stopped moving for the timeout: send the oldest rows again, waiting
        twice as long before the next time (the agent's paced resend)."""
        if self.protocol is None or not self.outbox or self.outbox[0].published_at is None:
            return
        if now - max(self.ack_moved_at, self.outbox[0].published_at) < self.resend_wait:
            return
        self.ack_moved_at, self.resend_wait = now, min(self.resend_wait * 2, 600)
        self.resend_all()

    # connection
    def connected(self, protocol: DeviceProtocol) -> None:
        self.protocol, self.connecting, self.attempts = protocol, False, 0
        self.connects += 1
        self.fleet.connect_times.append(time.monotonic())
        self.ack_moved_at = time.monotonic()
        now = datetime.now(UTC).isoformat()
        status = (
            f'{{"v":1,"kind":"status","id":"st{uuid.uuid4().hex}","site":"{self.site}",'
            f'"device":"{self.id}","ts":"{now}","state":"online","version":"fleet-sim"}}'
        )
        protocol.write(subscribe_packet(f"{self.prefix}/ack", self.next_packet_id()))
        protocol.write(publish_packet(f"{self.prefix}/status", status.encode(), 1, retain=True))
        self.resend_all()
        self.fleet.connected += 1

    def lost(self) -> None:
        if self.protocol is not None:
            self.fleet.connected -= 1
        self.protocol = None
        if not self.fleet.stopping:
            self.fleet.schedule_connect(self, self.fleet.retry_delay(self))


class DeviceProtocol(asyncio.Protocol):
    def __init__(self, device: Device) -> None:
        self.device = device
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.ready = False
        self.last_write = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's does not subclass asyncio.Transport)
        self.transport = cast(asyncio.Transport, transport)
        will = json.dumps(
            {
                "v": 1,
                "kind": "status",
                "id": f"will{uuid.uuid4().hex}",
                "site": self.device.site,
                "device": self.device.id,
                "ts": datetime.now(UTC).isoformat(),
                "state": "offline",
            }
        ).encode()
        self.transport.write(
            connect_packet(self.device.id, f"{self.device.prefix}/status", will, KEEPALIVE_S)
        )

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_write = time.monotonic()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            if len(self.buf) < 2:
                return
            length, shift, i = 0, 0, 1
            while True:
                if i >= len(self.buf):
                    return
                byte = self.buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if not byte & 0x80:
                    break
                shift += 7
            if len(self.buf) < i + length:
                return
            kind, body = self.buf[0], bytes(self.buf[i : i + length])
            del self.buf[: i + length]
            self.packet(kind, body)

    def packet(self, kind: int, body: bytes) -> None:
        ptype = kind >> 4
        if ptype == 2:  # CONNACK
            if body[1] != 0:
                self.device.fleet.refused += 1
                self.close()
                return
            self.ready = True
            self.device.connected(self)
        elif ptype == 3:  # PUBLISH (the retained or live ack)
            qos = (kind >> 1) & 3
            (tlen,) = struct.unpack_from("!H", body)
            offset = 2 + tlen
            if qos:
                (pid,) = struct.unpack_from("!H", body, offset)
                offset += 2
                self.write(b"\x40\x02" + struct.pack("!H", pid))
            self.device.on_ack(body[offset:])

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.ready:
            self.device.lost()
        else:
            self.device.fleet.failed_connects += 1
            self.device.connecting = False
            self.device.attempts += 1
            self.device.lost()


# -- the fleet ---------------------------------------------------------------------------
@dataclass
class Fleet:
    port: int
    n: int
    period: float
    heartbeat: float
    backoff: str
    heartbeats: str = "spread"
    sites: int = 100
    devices: list[Device] = field(default_factory=list)
    t0: float = field(default_factory=time.monotonic)
    produced: int = 0
    published: int = 0
    resent: int = 0
    acks_received: int = 0
    connected: int = 0
    failed_connects: int = 0
    refused: int = 0
    connect_attempts: int = 0
    connect_times: list[float] = field(default_factory=list)  # CONNACKs (monotonic)
    latencies: list[float] = field(default_factory=list)
    measuring: bool = False
    producing: bool = True
    stopping: bool = False
    rng: random.Random = field(default_factory=lambda: random.Random(17))

    def __post_init__(self) -> None:
        tag = uuid.uuid4().hex[:4]
        for i in range(self.n):
            self.devices.append(Device(self, f"fleet{tag}s{i % self.sites:03d}", f"dev{i:05d}"))
        if self.heartbeats == "spread":  # a fleet that has run a while: any phase
            now = time.monotonic()
            for d in self.devices:
                d.last_heartbeat = now - self.rng.uniform(0, self.heartbeat)

    def lat(self, d: Device) -> float:
        return 35 + int(d.id[3:]) % 200 / 10  # a grid over Europe

    def lon(self, d: Device) -> float:
        return -10 + int(d.id[3:]) // 200 % 400 / 10

    def retry_delay(self, d: Device) -> float:
        if self.backoff == "doubling":  # paho's own: 1, 2, 4, ... s, the same for every device
            return min(RECONNECT_MAX_S, 1.0 * 2**d.attempts)
        return reconnect_delay(d.attempts, RECONNECT_MIN_S, RECONNECT_MAX_S, self.rng)

    def schedule_connect(self, d: Device, delay: float) -> None:
        if d.connecting:
            return
        d.connecting = True
        asyncio.get_running_loop().call_later(delay, lambda: asyncio.ensure_future(self.dial(d)))

    async def dial(self, d: Device) -> None:
        if self.stopping:
            return
        self.connect_attempts += 1
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: DeviceProtocol(d), "127.0.0.1", self.port)
        except OSError:
            self.failed_connects += 1
            d.connecting = False
            d.attempts += 1
            self.schedule_connect(d, self.retry_delay(d))

    async def run_ticks(self) -> None:
        """Every device produces once per period, in its own slot of the period (so the
        fleet's load is even), a heartbeat every ``heartbeat`` s; overdue checks and
        keepalives ride on the same pass."""
        slots = max(1, round(self.period / TICK_S))
        tick = 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.stopping:
            now = time.monotonic()
            for d in self.devices[tick % slots :: slots]:
                if self.producing:
                    d.produce("inference")
                    if now - d.last_heartbeat >= self.heartbeat:
                        # the agent's interval: +-HEARTBEAT_JITTER of the period
                        d.last_heartbeat = now + self.heartbeat * self.rng.uniform(
                            -HEARTBEAT_JITTER, HEARTBEAT_JITTER
                        )
                        d.produce("heartbeat")
                d.check_overdue(now)
                if d.protocol is not None and now - d.protocol.last_write > KEEPALIVE_S / 2:
                    d.protocol.write(PINGREQ)
            tick += 1
            next_at += TICK_S
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    def backlog(self) -> int:
        return sum(len(d.outbox) for d in self.devices)

    def acknowledged(self) -> int:
        """Messages the fleet has been acknowledged for: committed, each counted once."""
        return sum(d.acked + 1 for d in self.devices)


# -- the services ------------------------------------------------------------------------
SERVICES_ACL = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto" / "services.acl"


def fleet_acl() -> str:
    """The production broker's ACL: deploy/mosquitto/services.acl as it is (ingest reads
    the five uplink kinds and writes acks), and for devices the rules onboard-device.sh
    writes per device, as patterns on the client id (the simulator's devices have no
    passwords; the broker has no password file, so a user name is taken as given). With
    it, the broker does not send ingest its own acks back, as in a real deployment; the
    anonymous demo broker does (``--acl none``), one delivery per ack."""
    devices = [f"pattern write earwitness/v1/+/%c/{kind}" for kind in Kind]
    devices += ["pattern read earwitness/v1/+/%c/ack", "pattern read earwitness/v1/+/%c/config"]
    return SERVICES_ACL.read_text() + "\n# simulated devices\n" + "\n".join(devices) + "\n"


@dataclass
class Services:
    work: Path
    db_name: str = field(default_factory=lambda: f"ew_fleet_{uuid.uuid4().hex[:8]}")
    broker: PrivateBroker | None = None
    ingests: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def db_url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:3306/{self.db_name}"

    def connect(self, db: str | None = "self") -> pymysql.connections.Connection[Any]:
        name = self.db_name if db == "self" else db
        return pymysql.connect(host="127.0.0.1", user="root", database=name, autocommit=True)

    def start(self, writers: int, consumers: int, acl: bool = True) -> None:
        admin = self.connect(None)
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {self.db_name}")
        admin.close()
        engine = make_engine(self.db_url)
        upgrade(engine)
        engine.dispose()
        conf = "autosave_interval 30\nmax_keepalive 120\n"
        if acl:
            acl_file = self.work / "fleet.acl"
            acl_file.write_text(fleet_acl())
            conf += f"acl_file {acl_file}\n"
        self.broker = PrivateBroker(conf)
        self.broker.start()
        env = {
            **os.environ,
            **({"EARWITNESS_MQTT__USERNAME": "ingest"} if acl else {}),
            "EARWITNESS_DATABASE_URL": self.db_url,
            "EARWITNESS_MQTT__PORT": str(self.broker.port),
            "EARWITNESS_INGEST__GROUP": "fleet",
            "EARWITNESS_INGEST__HEALTH_PORT": "0",
            "EARWITNESS_INGEST__SESSION_EXPIRY_S": "3600",
            "EARWITNESS_INGEST__WRITER_PROCESSES": str(writers),
            "EARWITNESS_CLIPS__URL": str(self.work / "clips"),
            "EARWITNESS_MQTT__RECONNECT_MAX_S": "2",
        }
        for i in range(consumers):  # consumers share the subscription (group "fleet")
            out = (self.work / f"ingest{i}.log").open("ab")
            self.ingests.append(
                subprocess.Popen(
                    [sys.executable, "-m", "earwitness", "ingest"],
                    env={**env, "EARWITNESS_INGEST__CLIENT_ID": f"ingest-{self.db_name}-{i}"},
                    stdout=out,
                    stderr=out,
                )
            )

    def stop(self, keep: bool) -> None:
        for ingest in self.ingests:
            if ingest.poll() is None:
                ingest.terminate()
        for ingest in self.ingests:
            try:
                ingest.wait(30)
            except subprocess.TimeoutExpired:
                ingest.kill()
        if self.broker:
            self.broker.cleanup()
        if not keep:
            admin = self.connect(None)
            with admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {self.db_name}")
            admin.close()

    def stored(self) -> int:
        conn = self.connect()
        with conn.cursor() as cur:
            total = 0
            for table in MESSAGE_TABLES:
                cur.execute(f"SELECT COUNT(*) FROM {table}")
                total += int(cur.fetchone()[0])
        conn.close()
        return total


def innodb_counters() -> dict[str, int]:
    conn = pymysql.connect(host="127.0.0.1", user="root")
    with conn.cursor() as cur:
        cur.execute(
            "SHOW GLOBAL STATUS WHERE Variable_name IN"
            " ('Handler_write', 'Handler_update', 'Handler_delete')"
        )
        out = {k: int(v) for k, v in cur.fetchall()}
    conn.close()
    return out


class Sampler:
    """CPU and RSS of the broker, ingest (with its writer processes), MariaDB and the
    simulator itself, sampled while a phase runs."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        mariadb = local_mariadb()
        if mariadb is not None:
            self.procs["mariadb"] = mariadb
        self.cpu0 = self._cpu()
        self.t0 = time.monotonic()
        self.peak_rss: dict[str, float] = {}

    def _tree(self, name: str) -> list[psutil.Process]:
        p = self.procs[name]
        try:
            return [p] + (p.children(recursive=True) if name.startswith("ingest") else [])
        except psutil.NoSuchProcess:
            return []

    def _cpu(self) -> dict[str, float]:
        out = {}
        for name in self.procs:
            total = 0.0
            for p in self._tree(name):
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.NoSuchProcess:
                    pass
            out[name] = total
        return out

    def sample_rss(self) -> None:
        for name in self.procs:
            rss = 0.0
            for p in self._tree(name):
                with suppress(psutil.NoSuchProcess):
                    rss += p.memory_info().rss / 2**20
            self.peak_rss[name] = max(self.peak_rss.get(name, 0.0), rss)

    def report(self) -> str:
        cpu1, dt = self._cpu(), time.monotonic() - self.t0
        parts = [
            f"{name} {100 * (cpu1[name] - self.cpu0.get(name, 0)) / dt:.0f} % CPU,"
            f" {self.peak_rss.get(name, 0):.0f} MB"
            for name in self.procs
        ]
        return "; ".join(parts)


# -- the run -----------------------------------------------------------------------------
async def sample_rss(current: Callable[[], Sampler]) -> None:
    while True:
        current().sample_rss()
        await asyncio.sleep(2)


async def wait_for(
    what: str, done: Callable[[], bool], timeout: float, progress: Callable[[], str]
) -> float | None:
    """Seconds until ``done()``, printing progress every 5 s; None at the timeout."""
    t0 = time.monotonic()
    next_print = t0 + 5
    while not done():
        now = time.monotonic()
        if now - t0 > timeout:
            log(f"{what}: not done after {timeout:.0f} s ({progress()})")
            return None
        if now >= next_print:
            log(f"{what}: {progress()}")
            next_print = now + 5
        await asyncio.sleep(0.2)
    return time.monotonic() - t0


async def measure(
    fleet: Fleet, services: Services, seconds: float, sampler: Sampler
) -> dict[str, float]:
    # Stored is counted by the devices' own ack marks (an ack follows the commit), not
    # by COUNT(*) on the growing tables: that took a minute at 1 M rows, and a query
    # on the event loop stalled every simulated device past its keepalive.
    stored0, acks0 = fleet.acknowledged(), fleet.acks_received
    inno0 = await asyncio.to_thread(innodb_counters)
    fleet.latencies.clear()
    fleet.measuring = True
    t0 = time.monotonic()
    held = []
    seen = 0  # latencies are appended as acks arrive: the slice since then is this window
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(5)
        held.append(fleet.connected)
        window, seen = fleet.latencies[seen:], len(fleet.latencies)
        p95 = f"{percentile(window, 95):.2f} s" if window else "-"
        log(
            f"steady: {fleet.connected} connected, backlog {fleet.backlog()},"
            f" {len(fleet.latencies)} acked in this phase, p95 of the last 5 s {p95}"
        )
    fleet.measuring = False
    dt = time.monotonic() - t0
    stored1, inno1 = fleet.acknowledged(), await asyncio.to_thread(innodb_counters)
    lat = fleet.latencies
    return {
        "held_min": min(held),
        "stored_per_s": (stored1 - stored0) / dt,
        "acks_per_s": (fleet.acks_received - acks0) / dt,
        "p50": percentile(lat, 50) if lat else float("nan"),
        "p95": percentile(lat, 95) if lat else float("nan"),
        "p99": percentile(lat, 99) if lat else float("nan"),
        "max": max(lat) if lat else float("nan"),
        "rows_updated_per_s": (inno1["Handler_update"] - inno0["Handler_update"]) / dt,
        "rows_inserted_per_s": (inno1["Handler_write"] - inno0["Handler_write"]) / dt,
        "rows_deleted_per_s": (inno1["Handler_delete"] - inno0["Handler_delete"]) / dt,
        "seconds": dt,
    }


def verify(fleet: Fleet, services: Services) -> list[str]:
    """Per device, from SQL: every seq it produced is stored exactly once."""
    conn = services.connect()
    got: dict[str, tuple[int, int, int]] = {}
    with conn.cursor() as cur:
        union = " UNION ALL ".join(f"SELECT device_id, seq FROM {t}" for t in MESSAGE_TABLES)
        cur.execute(
            f"SELECT device_id, COUNT(*), COUNT(DISTINCT seq), MAX(seq) FROM ({union}) s"
            " GROUP BY device_id"
        )
        for device, n, distinct, top in cur.fetchall():
            got[device] = (int(n), int(distinct), int(top))
        cur.execute("SELECT COUNT(*) FROM dead_letters")
        dead = int(cur.fetchone()[0])
        cur.execute("SELECT COUNT(*), SUM(online) FROM devices")
        device_rows, online = cur.fetchone()
    conn.close()
    problems = []
    for d in fleet.devices:
        n, distinct, top = got.get(d.id, (0, 0, -1))
        if not (n == distinct == d.next_seq and top == d.next_seq - 1):
            problems.append(
                f"{d.id}: produced seqs 0..{d.next_seq - 1}, stored {n} rows,"
                f" {distinct} distinct, max {top}"
            )
    if dead:
        problems.append(f"{dead} dead letters")
    if int(device_rows) != fleet.n:
        problems.append(f"devices table has {device_rows} rows, fleet {fleet.n}")
    rows = sum(n for n, _distinct, _top in got.values())
    log(
        f"verified: {rows} rows stored for {fleet.produced} produced;"
        f" devices table: {device_rows} rows, {online} online"
    )
    return problems


async def run(args: argparse.Namespace) -> int:
    # One socket per device here, and one per device in the broker (which inherits this
    # limit): each process needs the fleet's size plus some.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.devices + 2048
    if hard != resource.RLIM_INFINITY and hard < want:
        print(
            f"error: open-files limit {hard} < {want} needed for {args.devices} devices"
            " (ulimit -Hn)",
            file=sys.stderr,
        )
        return 2
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    work = Path(tempfile.mkdtemp(prefix="ew-fleet-"))
    services = Services(work)
    services.start(args.writers, args.consumers, acl=args.acl == "production")
    assert services.broker is not None
    status = 1
    fleet = Fleet(
        services.broker.port,
        args.devices,
        args.period,
        args.heartbeat,
        args.backoff,
        args.heartbeats,
    )
    try:
        log(
            f"{machine()}; {args.devices} devices on {fleet.sites} sites, one inference per"
            f" {args.period:g} s, heartbeat {args.heartbeat:g} s, backoff {args.backoff},"
            f" {args.loop} event loop; broker ACL {args.acl},"
            f" :{services.broker.port}, database {services.db_name}"
        )
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", services.broker.port) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(3)  # ingest subscribed
        ticks = asyncio.ensure_future(fleet.run_ticks())
        for i, d in enumerate(fleet.devices):
            fleet.schedule_connect(d, args.ramp * i / args.devices)
        ramp = await wait_for(
            "connecting",
            lambda: fleet.connected == fleet.n,
            args.ramp + 120,
            lambda: f"{fleet.connected} connected, {fleet.failed_connects} failed attempts",
        )
        log(f"fleet connected in {ramp} s (ramp {args.ramp:g} s)")
        await asyncio.sleep(args.warmup)
        pids = {"broker": services.broker.proc.pid}  # type: ignore[union-attr]
        pids.update({f"ingest{i}": p.pid for i, p in enumerate(services.ingests)})
        pids["simulator"] = os.getpid()
        sampler = Sampler(pids)
        sampling = asyncio.ensure_future(sample_rss(lambda: sampler))
        steady = await measure(fleet, services, args.steady, sampler)
        resources = sampler.report()
        log(
            f"STEADY {steady['seconds']:.0f} s: held >= {steady['held_min']:.0f} connections;"
            f" stored {steady['stored_per_s']:.0f} msg/s; publish-to-ack p50"
            f" {steady['p50']:.3f} s, p95 {steady['p95']:.3f} s, p99 {steady['p99']:.3f} s, max"
            f" {steady['max']:.3f} s; acks {steady['acks_per_s']:.0f}/s; rows written"
            f" {steady['rows_inserted_per_s']:.0f}/s, updated {steady['rows_updated_per_s']:.0f}/s,"
            f" deleted {steady['rows_deleted_per_s']:.0f}/s (whole server)"
        )
        log(f"STEADY resources: {resources}")

        # the outage
        log(f"broker SIGKILL, down for {args.outage:g} s while devices keep producing")
        services.broker.kill()
        await asyncio.sleep(args.outage)
        targets = {d.id: d.next_seq - 1 for d in fleet.devices}
        attempts0, backlog = fleet.connect_attempts, fleet.backlog()
        services.broker.start()
        back_at = time.monotonic()
        pids["broker"] = services.broker.proc.pid  # type: ignore[union-attr]
        sampler = Sampler(pids)
        log(f"broker back; backlog {backlog} messages across the fleet")
        by_id = {d.id: d for d in fleet.devices}
        reconnected = await wait_for(
            "reconnecting",
            lambda: fleet.connected == fleet.n,
            args.recovery_timeout,
            lambda: f"{fleet.connected} connected, backlog {fleet.backlog()}",
        )

        def drained() -> bool:
            return all(by_id[k].acked >= v for k, v in targets.items())

        recovered = await wait_for(
            "draining",
            drained,
            args.recovery_timeout,
            lambda: (
                f"{sum(by_id[k].acked >= v for k, v in targets.items())} devices caught up,"
                f" {fleet.connected} connected, backlog {fleet.backlog()}"
            ),
        )
        caught_up = reconnected + recovered if reconnected and recovered else None
        per_second: dict[int, int] = {}
        for t in fleet.connect_times:
            if t >= back_at:
                per_second[int(t - back_at)] = per_second.get(int(t - back_at), 0) + 1
        peak = max(per_second.values(), default=0)
        log(
            f"reconnects after the broker returned: peak {peak} in one second, over"
            f" {len(per_second)} distinct seconds"
        )
        log(
            f"RECOVERY: all reconnected {reconnected and round(reconnected, 1)} s after the"
            f" broker returned, every device acknowledged for all it produced before that"
            f" {caught_up and round(caught_up, 1)} s after it returned;"
            f" {fleet.connect_attempts - attempts0} connection attempts;"
            f" {fleet.resent} messages re-sent so far; {sampler.report()}"
        )

        # drain and verify
        await asyncio.sleep(args.warmup)
        fleet.producing = False
        drain = await wait_for(
            "final drain",
            lambda: fleet.backlog() == 0,
            args.recovery_timeout,
            lambda: f"backlog {fleet.backlog()}",
        )
        log(
            f"final drain {drain} s; produced {fleet.produced},"
            f" stored so far {services.stored()} (ingest may still be writing; verify counts)"
        )
        problems = verify(fleet, services)
        for p in problems[:20]:
            log(f"FAIL  {p}")
        ok = not problems and caught_up is not None
        targets_met = (
            steady["p95"] <= 1.0 and steady["held_min"] >= fleet.n and (caught_up or 1e9) <= 180
        )
        log(
            f"FLEET {'PASS' if ok else 'FAIL'}: {len(problems)} problem(s);"
            f" targets (p95 <= 1 s, all held, recovery <= 180 s)"
            f" {'met' if targets_met else 'NOT met'}"
        )
        status = 0 if ok else 1
        fleet.stopping = True
        ticks.cancel()
        sampling.cancel()
        for d in fleet.devices:
            if d.protocol is not None:
                d.protocol.write(DISCONNECT)
                d.protocol.close()
        await asyncio.sleep(1)
    finally:
        fleet.stopping = True
        services.stop(args.keep)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            log(f"kept: database {services.db_name}, files {work}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--period", type=float, default=2.0, help="seconds between inferences")
    parser.add_argument("--heartbeat", type=float, default=30.0, help="seconds between heartbeats")
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds to connect the fleet")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--steady", type=float, default=120.0, help="seconds measured")
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the broker is down")
    parser.add_argument("--recovery-timeout", type=float, default=600.0)
    parser.add_argument("--writers", type=int, default=2, help="writer processes per consumer")
    parser.add_argument("--consumers", type=int, default=1, help="ingest processes (shared sub)")
    parser.add_argument(
        "--backoff",
        choices=("jittered", "doubling"),
        default="jittered",
        help="jittered: the agent's (shared.mqtt.reconnect_delay); doubling: paho's own",
    )
    parser.add_argument(
        "--heartbeats",
        choices=("spread", "together"),
        default="spread",
        help="spread: each device's heartbeats at a random phase of the period (a fleet"
        " that has run a while); together: every device's first at once (a site powered"
        " on at once), later ones spread only by the agent's jitter",
    )
    parser.add_argument(
        "--acl",
        choices=("production", "none"),
        default="production",
        help="production: the broker enforces deploy/mosquitto/services.acl and the device"
        " rules (acks are not delivered back to ingest); none: the anonymous demo broker",
    )
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the simulator's event loop (uvloop: less of the shared CPU for the devices)",
    )
    args = parser.parse_args(argv)
    if not port_open("127.0.0.1", 3306):
        print("error: MariaDB is not reachable on 127.0.0.1:3306", file=sys.stderr)
        return 2
    if args.loop == "uvloop":
        import uvloop  # libuv's event loop: the simulator's own CPU is not the system's

        return uvloop.run(run(args))
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
