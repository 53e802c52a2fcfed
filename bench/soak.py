"""Fault soak: the delivery promise (every message stored exactly once, nothing left behind)
under every fault kind the product must survive, verified from SQL and the outboxes alone.

N edge agents (real processes, the real model) replay audio faster than real time through a
TCP proxy to a private Mosquitto with persistence; ingest (a real process) writes into a
fresh MariaDB database. While traffic flows, faults are injected one after another:

  broker SIGKILL, broker outage, network blackhole (devices <-> broker), ingest SIGKILL,
  ingest SIGSTOP, ingest's writer process SIGKILL, database connections killed
  server-side, an edge agent SIGKILL (restarted on the same outbox)

then the agents finish (`--exit-when-done`) and the result is verified: per device no seq
stored twice across all tables, every message id is the device's own (device, epoch, seq)
id, the ack watermark reached the highest stored seq (so every seq below it was stored or
declared never issued by the device), no pending seqs left, outboxes empty, the retained ack
on the broker equals the watermark, inference rows equal the windows the audio yields (at
least that for a restarted agent, which replays from the start), nothing dropped.

    .venv/bin/python bench/soak.py --short          # CI: about 4 minutes, every fault once
    .venv/bin/python bench/soak.py --devices 3 --audio-s 48100 --speed 60 --rounds 2 \
        --hold 20 --gap 30 --finish-timeout 1500     # a long run: 3 x 100,000 windows

Exit status 0 and `SOAK PASS`, or 1 and `SOAK FAIL` with each failed check.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import psutil
import pymysql
import soundfile as sf
import yaml

from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.shared import synth
from earwitness.shared.frontend import PATCH_HOP_SAMPLES, PATCH_SAMPLES, padded_length
from earwitness.shared.messages import message_id
from tests.galera import GaleraCluster
from tests.ingest_helpers import Publisher
from tests.services import PrivateBroker, free_port, port_open

ROOT = Path(__file__).resolve().parent.parent
RATE = 16_000
MESSAGE_TABLES = ("inferences", "events", "clips", "heartbeats")
MODELS = Path(os.environ.get("EARWITNESS_MODEL_DIR", ROOT.parent / "shared" / "models"))


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- a TCP proxy that can drop the network ---------------------------------------------------
class Proxy:
    """Forwards 127.0.0.1:port to the broker. `blackhole` keeps connections open but moves
    no bytes (a dead network path: TCP neither fails nor delivers)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.port = free_port()
        self.blackhole = threading.Event()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()  # the broker is down: the device sees a refused connection
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        src.settimeout(0.2)
        try:
            while not self._stop.is_set():
                if self.blackhole.is_set():
                    time.sleep(0.05)
                    continue
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    break
                while self.blackhole.is_set():  # bytes in flight wait, as in a stalled path
                    time.sleep(0.05)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()


# -- processes -----------------------------------------------------------------------------
def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    out = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "earwitness", *args],
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )


@dataclass
class Soak:
    work: Path
    devices: int
    audio_s: float
    speed: float
    db_name: str = field(default_factory=lambda: f"ew_soak_{uuid.uuid4().hex[:8]}")
    site: str = field(default_factory=lambda: f"soak{uuid.uuid4().hex[:6]}")
    broker: PrivateBroker = field(init=False)
    proxy: Proxy = field(init=False)
    ingest: subprocess.Popen[bytes] | None = None
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    restarted: set[str] = field(default_factory=set)
    galera: GaleraCluster | None = None
    db_port: int = 3306

    @property
    def db_url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.db_port}/{self.db_name}"

    def device_ids(self) -> list[str]:
        return [f"soak-{i:02d}" for i in range(self.devices)]

    # setup
    def start(self) -> None:
        if self.galera is not None:
            log("starting a 3-node Galera cluster behind HAProxy")
            self.galera.start()
            self.db_port = self.galera.port
        admin = self.connect(None)
        with admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {self.db_name}")
        admin.close()
        engine = make_engine(self.db_url)
        upgrade(engine)
        engine.dispose()
        self.broker = PrivateBroker("autosave_interval 5\n")
        self.broker.start()
        self.proxy = Proxy(self.broker.port)
        self.proxy.start()
        self.start_ingest()
        for device in self.device_ids():
            self.write_audio(device)
            self.start_agent(device)
        log(
            f"{self.devices} agents x {self.audio_s:.0f} s of audio at {self.speed:g}x, broker"
            f" :{self.broker.port} via proxy :{self.proxy.port}, database {self.db_name}"
        )

    def start_ingest(self) -> None:
        env = {
            "EARWITNESS_DATABASE_URL": self.db_url,
            "EARWITNESS_MQTT__PORT": str(self.broker.port),
            "EARWITNESS_INGEST__GROUP": "soak",
            "EARWITNESS_INGEST__CLIENT_ID": f"ingest-{self.site}",
            "EARWITNESS_INGEST__SITES": json.dumps([self.site]),
            "EARWITNESS_INGEST__HEALTH_PORT": "0",
            "EARWITNESS_INGEST__SESSION_EXPIRY_S": "600",
            "EARWITNESS_CLIPS__URL": str(self.work / "clips"),
            "EARWITNESS_MQTT__RECONNECT_MAX_S": "2",
        }
        self.ingest = spawn(["ingest"], env, self.work / "ingest.log")

    def audio_dir(self, device: str) -> Path:
        return self.work / "audio" / device

    def write_audio(self, device: str) -> None:
        """Three files, none a whole number of seconds long (a replay defect once dropped
        most windows after such a tail), noise with tones so events and clips happen."""
        directory = self.audio_dir(device)
        directory.mkdir(parents=True)
        rng = np.random.default_rng(int(device.rsplit("-", 1)[-1]))
        parts = (0.37, 0.41, 0.22)
        siren = synth.siren(6.0)  # the demo's siren: events, clips, second opinions
        for i, part in enumerate(parts):
            n = int(self.audio_s * part * RATE) + 1234 * (i + 1)
            wave = 0.01 * rng.standard_normal(n)
            for start in range(int(3 * RATE), n - len(siren), 30 * RATE):  # 6 s of every 30
                wave[start : start + len(siren)] += siren
            sf.write(directory / f"{i}.wav", wave.astype(np.float32), RATE)

    def expected_windows(self, device: str) -> int:
        """The files are one stream; its tail is padded to a whole patch, as the reference
        YAMNet frontend does (shared/frontend.py)."""
        total = sum(sf.info(str(p)).frames for p in self.audio_dir(device).glob("*.wav"))
        return 1 + (padded_length(total) - PATCH_SAMPLES) // PATCH_HOP_SAMPLES

    def outbox(self, device: str) -> Path:
        return self.work / f"{device}-outbox.db"

    def start_agent(self, device: str) -> None:
        config = self.work / f"{device}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "device": {"id": device, "site": self.site, "lat": 48.2, "lon": 16.37},
                    "source": {
                        "kind": "file",
                        "path": str(self.audio_dir(device)),
                        "realtime": True,
                        "speed": self.speed,
                    },
                    "model": {"dir": str(MODELS)},
                    "mqtt": {
                        "host": "127.0.0.1",
                        "port": self.proxy.port,
                        "reconnect_min_s": 0.5,
                        "reconnect_max_s": 4,
                        "keepalive_s": 5,
                    },
                    "outbox": {"path": str(self.outbox(device)), "ack_timeout_s": 5},
                    "health": {"port": 0},
                    "heartbeat_s": 5,
                }
            )
        )
        self.agents[device] = spawn(
            ["edge", "--config", str(config), "--exit-when-done", "--drain-timeout", "240"],
            {"EARWITNESS_MODEL_DIR": str(MODELS)},
            self.work / f"{device}.log",
        )

    def stop(self) -> None:
        for proc in [*self.agents.values(), self.ingest]:
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if hasattr(self, "proxy"):  # start() may have failed before
            self.proxy.close()
        if hasattr(self, "broker"):
            self.broker.cleanup()

    def connect(self, database: str | None = "") -> Any:
        """A root connection to the system of record (one MariaDB, or the cluster's HAProxy)."""
        return pymysql.connect(
            host="127.0.0.1",
            port=self.db_port,
            user="root",
            database=self.db_name if database == "" else database,
            autocommit=True,
        )

    def drop_database(self) -> None:
        if self.galera is not None:
            self.galera.cleanup()  # the whole cluster goes
            return
        admin = self.connect(None)
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {self.db_name}")
        admin.close()


# -- faults -----------------------------------------------------------------------------------
def broker_sigkill(s: Soak, hold: float) -> None:
    s.broker.kill()
    time.sleep(1)
    s.broker.start()


def broker_outage(s: Soak, hold: float) -> None:
    s.broker.stop()
    time.sleep(hold)
    s.broker.start()


def network_blackhole(s: Soak, hold: float) -> None:
    s.proxy.blackhole.set()
    time.sleep(hold)
    s.proxy.blackhole.clear()


def ingest_sigkill(s: Soak, hold: float) -> None:
    assert s.ingest is not None
    s.ingest.kill()
    s.ingest.wait(10)
    time.sleep(1)
    s.start_ingest()


def ingest_sigstop(s: Soak, hold: float) -> None:
    assert s.ingest is not None
    os.kill(s.ingest.pid, signal.SIGSTOP)
    time.sleep(hold)
    os.kill(s.ingest.pid, signal.SIGCONT)


def writer_sigkill(s: Soak, hold: float) -> None:
    assert s.ingest is not None
    children = psutil.Process(s.ingest.pid).children(recursive=True)
    writers = [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]
    if not writers:
        raise RuntimeError("ingest has no writer process to kill")
    for child in writers:
        child.kill()


def db_connections_killed(s: Soak, hold: float) -> None:
    admin = s.connect(None)
    with admin.cursor() as cur:
        cur.execute(
            "SELECT id FROM information_schema.PROCESSLIST WHERE db = %s AND id != CONNECTION_ID()",
            (s.db_name,),
        )
        ids = [row[0] for row in cur.fetchall()]
        for conn_id in ids:
            with suppress(pymysql.MySQLError):  # it may have ended by itself
                cur.execute(f"KILL CONNECTION {int(conn_id)}")
    admin.close()


def agent_sigkill(s: Soak, hold: float) -> None:
    """A different agent each round (--rounds), so no replay restarts twice."""
    device = s.device_ids()[len(s.restarted) % s.devices]
    s.agents[device].kill()
    s.agents[device].wait(10)
    time.sleep(1)
    s.restarted.add(device)
    s.start_agent(device)  # same outbox: same epoch, the rest is re-sent


def galera_node_sigkill(s: Soak, hold: float) -> None:
    """The node HAProxy writes to dies; writes move to a backup; it rejoins (state
    transfer) and new connections return to it while old ones stay: two writers."""
    assert s.galera is not None
    s.galera.kill(0)
    time.sleep(hold)
    s.galera.start_node(0)
    log(f"galera node n0 rejoined: cluster size {s.galera.cluster_size()}")


FAULTS: list[tuple[str, Callable[[Soak, float], None]]] = [
    ("broker SIGKILL", broker_sigkill),
    ("broker outage", broker_outage),
    ("network blackhole", network_blackhole),
    ("ingest SIGKILL", ingest_sigkill),
    ("ingest SIGSTOP", ingest_sigstop),
    ("writer SIGKILL", writer_sigkill),
    ("database connections killed", db_connections_killed),
    ("edge agent SIGKILL", agent_sigkill),
]


# -- verification -----------------------------------------------------------------------------
@dataclass
class Report:
    failures: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        (self.facts if ok else self.failures).append(what)


def outbox_state(path: Path) -> tuple[str | None, int]:
    if not path.exists():
        return None, 0
    with sqlite3.connect(path) as db:
        epoch = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        rows = int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    return (epoch[0] if epoch else None), rows


def retained_acks(broker_port: int, site: str, devices: list[str]) -> dict[str, dict[str, Any]]:
    """The retained ack of each device, read as a device would on (re)connect."""
    pub = Publisher(port=broker_port, client_id=f"soak-check-{site}")
    pub.watch_acks(site)
    topics = {device: f"earwitness/v1/{site}/{device}/ack" for device in devices}
    deadline = time.monotonic() + 10
    while not set(topics.values()) <= set(pub.acks) and time.monotonic() < deadline:
        time.sleep(0.1)
    pub.close()
    return {device: pub.acks[t] for device, t in topics.items() if t in pub.acks}


def verify(s: Soak) -> Report:
    """Every check, from the database, the outbox files and the broker's retained acks."""
    report = Report()
    devices = s.device_ids()
    conn = s.connect()
    acks = retained_acks(s.broker.port, s.site, devices)
    with conn.cursor() as cur:
        for device in devices:
            epoch, left = outbox_state(s.outbox(device))
            report.check(left == 0, f"{device}: outbox empty ({left} rows left)")
            rows: list[tuple[str, int, str]] = []
            for table in MESSAGE_TABLES:
                cur.execute(f"SELECT seq, message_id FROM {table} WHERE device_id = %s", (device,))
                rows += [(table, int(seq), mid) for seq, mid in cur.fetchall()]
            seqs = [seq for _, seq, _ in rows]
            dups = len(seqs) - len(set(seqs))
            report.check(dups == 0, f"{device}: no seq stored twice ({dups} duplicates)")
            foreign = [
                (t, seq) for t, seq, mid in rows if epoch and mid != message_id(device, epoch, seq)
            ]
            report.check(
                epoch is not None and not foreign,
                f"{device}: every message id is (device, outbox epoch, seq)"
                f" ({len(foreign)} not, e.g. {foreign[:2]})",
            )
            cur.execute("SELECT epoch, seq FROM ack_watermarks WHERE device_id = %s", (device,))
            marks = dict(cur.fetchall())
            top = max(seqs, default=-1)
            mark = marks.get(epoch, -1) if epoch else -1
            report.check(
                set(marks) <= {epoch} and mark >= top,
                f"{device}: watermark {mark} reached the highest stored seq {top}"
                f" (epochs {sorted(marks)})",
            )
            cur.execute("SELECT COUNT(*) FROM pending_seqs WHERE device_id = %s", (device,))
            pending = int(cur.fetchone()[0])
            report.check(pending == 0, f"{device}: no pending seqs above the watermark ({pending})")
            ack = acks.get(device)
            report.check(
                ack is not None and ack.get("epoch") == epoch and ack.get("seq") == mark,
                f"{device}: retained ack {ack and ack.get('seq')} equals the watermark {mark}",
            )
            windows = sum(1 for t, _, _ in rows if t == "inferences")
            want = s.expected_windows(device)
            if device in s.restarted:
                ok, how = windows >= want, f">= {want} (restarted: replays from the start)"
            else:
                ok, how = windows == want, f"== {want}"
            report.check(ok, f"{device}: {windows} inference rows {how}")
            cur.execute(
                "SELECT COALESCE(MAX(windows_dropped), 0), COALESCE(MAX(outbox_dropped), 0)"
                " FROM heartbeats WHERE device_id = %s",
                (device,),
            )
            dropped, outbox_dropped = cur.fetchone()
            report.check(
                dropped == 0 and outbox_dropped == 0,
                f"{device}: nothing dropped (windows {dropped}, outbox {outbox_dropped})",
            )
        cur.execute("SELECT COUNT(*) FROM dead_letters")
        dead = int(cur.fetchone()[0])
        report.check(dead == 0, f"no dead letters ({dead})")
    conn.close()
    return report


def print_report(report: Report) -> int:
    for fact in report.facts:
        log(f"ok    {fact}")
    for failure in report.failures:
        log(f"FAIL  {failure}")
    if report.failures:
        log(f"SOAK FAIL: {len(report.failures)} check(s) failed")
        return 1
    log(f"SOAK PASS: {len(report.facts)} checks")
    return 0


# -- the run ----------------------------------------------------------------------------------
def counts(s: Soak) -> dict[str, int]:
    conn = s.connect()
    with conn.cursor() as cur:
        out = {}
        for table in MESSAGE_TABLES:
            cur.execute(f"SELECT COUNT(*) FROM {table}")
            out[table] = int(cur.fetchone()[0])
    conn.close()
    return out


def finish_and_verify(s: Soak, timeout: float) -> Report:
    """Wait for the agents to replay, drain and exit, then check everything."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in s.agents.values()):
        if time.monotonic() > deadline:
            log("agents still running at the deadline")
            break
        time.sleep(1)
    codes = {d: p.poll() for d, p in s.agents.items()}
    log(f"agents exited {codes}; stored {counts(s)}")
    time.sleep(2)  # the last acks' retained copies
    report = verify(s)
    report.check(all(c == 0 for c in codes.values()), f"every agent exited 0 ({codes})")
    return report


@contextmanager
def soak_run(args: argparse.Namespace) -> Iterator[Soak]:
    work = Path(tempfile.mkdtemp(prefix="ew-soak-"))
    s = Soak(work, args.devices, args.audio_s, args.speed)
    if getattr(args, "galera", False):
        s.galera = GaleraCluster()
    try:
        s.start()
        yield s
    finally:
        s.stop()
        if not args.keep:
            s.drop_database()
            subprocess.run(["rm", "-rf", str(work)], check=False)
        else:
            log(f"kept: database {s.db_name}, files {work}")


def run(args: argparse.Namespace) -> int:
    if not (MODELS / "yamnet_spectra_in.tflite").is_file():
        print(f"error: no models in {MODELS} (set EARWITNESS_MODEL_DIR)", file=sys.stderr)
        return 2
    if not args.galera and not port_open("127.0.0.1", 3306):
        print("error: MariaDB is not reachable on 127.0.0.1:3306", file=sys.stderr)
        return 2
    begin = time.monotonic()
    with soak_run(args) as s:
        time.sleep(args.warmup)
        faults = FAULTS + ([("galera node SIGKILL", galera_node_sigkill)] if args.galera else [])
        for round_ in range(1, args.rounds + 1):
            for name, fault in faults:
                log(f"fault: {name}, round {round_}/{args.rounds} (traffic so far {counts(s)})")
                fault(s, args.hold)
                time.sleep(args.gap)
        log("faults done; waiting for every agent to finish and drain")
        report = finish_and_verify(s, args.finish_timeout)
        status = print_report(report)
        if status:
            for device in s.device_ids()[:1]:
                tail = (s.work / f"{device}.log").read_text(errors="replace")[-1500:]
                log(f"last lines of {device}.log:\n{tail}")
    log(f"soak took {time.monotonic() - begin:.0f} s")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--audio-s", type=float, default=900, help="seconds of audio per agent")
    parser.add_argument("--speed", type=float, default=8, help="replay at N x real time")
    parser.add_argument("--hold", type=float, default=10, help="seconds an outage lasts")
    parser.add_argument("--gap", type=float, default=6, help="seconds between faults")
    parser.add_argument("--warmup", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=1, help="times every fault is injected")
    parser.add_argument("--finish-timeout", type=float, default=300)
    parser.add_argument("--short", action="store_true", help="the CI run: every fault once, fast")
    parser.add_argument("--keep", action="store_true", help="keep the database and files")
    parser.add_argument(
        "--galera",
        action="store_true",
        help="the system of record is a 3-node Galera cluster behind HAProxy (tests/galera.py),"
        " with one more fault: SIGKILL of the node taking writes, then its rejoin",
    )
    args = parser.parse_args(argv)
    if args.short:
        args.devices, args.audio_s, args.speed, args.hold, args.gap = 3, 900, 8, 8, 5
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
