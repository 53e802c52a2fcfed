"""A MariaDB Galera cluster of our own: three nodes on private ports and data directories
with HAProxy in front, so tests and the soak can run the product on a replicated system of
record and SIGKILL a node mid-stream.

HAProxy sends every connection to the first healthy node and keeps the others as backups
(the usual way to avoid certification conflicts); while a killed node rejoins, old
connections stay on the backup and new ones go back to it, so for a while two nodes take
writes, which is when Galera's certification conflicts (error 1213) happen.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

from tests.services import free_port, port_open

PROVIDER = Path("/usr/lib/galera/libgalera_smm.so")
SYNC_TIMEOUT_S = 120  # a joiner's state transfer (rsync) on a busy 2-core machine


class GaleraError(RuntimeError):
    """The cluster could not be started or a node did not (re)join."""


def missing_tools() -> list[str]:
    """What this machine lacks for a cluster (apt-get install galera-4 haproxy rsync)."""
    needed = {
        "mariadbd": shutil.which("mariadbd") or "/usr/sbin/mariadbd",
        "mariadb-install-db": shutil.which("mariadb-install-db") or "",
        "haproxy": shutil.which("haproxy") or "/usr/sbin/haproxy",
        "rsync": shutil.which("rsync") or "",
        "galera-4": str(PROVIDER),
    }
    return [name for name, path in needed.items() if not path or not Path(path).exists()]


class GaleraCluster:
    def __init__(self, nodes: int = 3) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ew-galera-"))
        self.nodes = nodes
        self.sql_ports = [free_port() for _ in range(nodes)]
        self.gcomm_ports = [free_port() for _ in range(nodes)]
        self.ist_ports = [free_port() for _ in range(nodes)]
        self.sst_ports = [free_port() for _ in range(nodes)]
        self.port = free_port()  # HAProxy: what the product connects to
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self.haproxy: subprocess.Popen[bytes] | None = None
        # As root, mariadbd and its rsync state transfer run as the mysql user.
        self.user = "mysql" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name

    def url(self, database: str) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}/{database}"

    def _config(self, i: int) -> Path:
        members = ",".join(f"127.0.0.1:{p}" for p in self.gcomm_ports)
        path = self.dir / f"n{i}.cnf"
        path.write_text(
            "[mysqld]\n"
            f"datadir={self.dir / f'n{i}'}\n"
            f"socket={self.dir / f'n{i}.sock'}\n"
            f"pid-file={self.dir / f'n{i}.pid'}\n"
            f"port={self.sql_ports[i]}\n"
            "bind-address=127.0.0.1\n"
            f"user={self.user}\n"
            "binlog_format=ROW\n"
            "default_storage_engine=InnoDB\n"
            "innodb_autoinc_lock_mode=2\n"
            "innodb_buffer_pool_size=128M\n"
            "innodb_flush_log_at_trx_commit=2\n"
            "max_connections=300\n"
            "character-set-server=utf8mb4\n"
            "wsrep_on=ON\n"
            f"wsrep_provider={PROVIDER}\n"
            "wsrep_cluster_name=earwitness-test\n"
            f"wsrep_cluster_address=gcomm://{members}\n"
            f"wsrep_node_address=127.0.0.1:{self.gcomm_ports[i]}\n"
            f"wsrep_node_name=n{i}\n"
            f'wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:{self.gcomm_ports[i]};'
            f'ist.recv_addr=127.0.0.1:{self.ist_ports[i]}"\n'
            "wsrep_sst_method=rsync\n"
            f"wsrep_sst_receive_address=127.0.0.1:{self.sst_ports[i]}\n"
        )
        return path

    def start(self) -> None:
        missing = missing_tools()
        if missing:
            raise GaleraError(
                f"missing {', '.join(missing)}: apt-get install galera-4 haproxy rsync"
            )
        for i in range(self.nodes):
            (self.dir / f"n{i}").mkdir()
        if os.geteuid() == 0:  # the nodes run as mysql: their directories are its own
            for path in [self.dir, *self.dir.iterdir()]:
                shutil.chown(path, self.user, self.user)
        init = subprocess.run(
            ["mariadb-install-db", "--no-defaults", f"--user={self.user}",
             f"--datadir={self.dir / 'n0'}", "--auth-root-authentication-method=normal"],
            capture_output=True, text=True,
        )  # fmt: skip
        if init.returncode != 0:
            raise GaleraError(
                f"mariadb-install-db failed: {init.stdout[-800:]}{init.stderr[-800:]}"
            )
        if os.geteuid() == 0:
            for path in self.dir.rglob("*"):
                shutil.chown(path, self.user, self.user)
        self.start_node(0, bootstrap=True)
        for i in range(1, self.nodes):
            self.start_node(i)
        self._start_haproxy()

    def start_node(self, i: int, bootstrap: bool = False) -> None:
        args = ["mariadbd", f"--defaults-file={self._config(i)}"]
        if bootstrap:
            args.append("--wsrep-new-cluster")
        log = (self.dir / f"n{i}.log").open("ab")
        self.procs[i] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        self.wait_synced(i)

    def _status(self, port: int, variable: str) -> str:
        conn = pymysql.connect(host="127.0.0.1", port=port, user="root", connect_timeout=2)
        with conn.cursor() as cur:
            cur.execute("SHOW STATUS LIKE %s", (variable,))
            row = cur.fetchone()
        conn.close()
        return str(row[1]) if row else ""

    def state(self, i: int) -> str:
        return self._status(self.sql_ports[i], "wsrep_local_state_comment")

    def cluster_size(self) -> int:
        return int(self._status(self.port, "wsrep_cluster_size") or 0)

    def wait_synced(self, i: int) -> None:
        deadline = time.monotonic() + SYNC_TIMEOUT_S
        proc = self.procs[i]
        while True:
            if proc is not None and proc.poll() is not None:
                tail = (self.dir / f"n{i}.log").read_text(errors="replace")[-1500:]
                raise GaleraError(f"galera node n{i} exited {proc.returncode}:\n{tail}")
            try:
                if self.state(i) == "Synced":
                    return
            except pymysql.MySQLError:
                pass  # still starting or transferring state
            if time.monotonic() > deadline:
                raise GaleraError(f"galera node n{i} not synced after {SYNC_TIMEOUT_S} s")
            time.sleep(0.5)

    def _start_haproxy(self) -> None:
        servers = "\n".join(
            f"  server n{i} 127.0.0.1:{port} check inter 500 fall 2 rise 2"
            + ("" if i == 0 else " backup")
            for i, port in enumerate(self.sql_ports)
        )
        conf = self.dir / "haproxy.cfg"
        conf.write_text(
            "global\n  maxconn 2000\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 1h\n"
            "  timeout server 1h\n"
            f"listen galera\n  bind 127.0.0.1:{self.port}\n  option tcpka\n{servers}\n"
        )
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        self.haproxy = subprocess.Popen(
            [binary, "-f", str(conf)],
            stdout=(self.dir / "haproxy.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port, 0.2):
            if time.monotonic() > deadline:
                raise GaleraError("haproxy did not start")
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def cleanup(self) -> None:
        for proc in [self.haproxy, *self.procs]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)
