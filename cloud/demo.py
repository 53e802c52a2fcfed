"""`earwitness demo`: the whole system in one process tree on embedded defaults.

An embedded broker, SQLite, ingest, the web app on http://127.0.0.1:8000 and several
simulated devices at real coordinates listening to a synthesized soundscape (or to a
directory of audio files). Ctrl-C stops everything.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from cloud.broker import EmbeddedBroker
from cloud.clipstore import FileClipStore
from cloud.db.engine import make_engine
from cloud.db.migrate import upgrade
from cloud.db.models import Inference
from cloud.ingest.consumer import IngestService
from cloud.settings import CloudSettings
from shared.lifecycle import stop_on_signals

log = logging.getLogger("earwitness.demo")


@dataclass(frozen=True)
class SimDevice:
    id: str
    name: str
    lat: float
    lon: float


SITES = [
    SimDevice("vienna-01", "Vienna, Stephansplatz", 48.2085, 16.3721),
    SimDevice("berlin-01", "Berlin, Alexanderplatz", 52.5219, 13.4132),
    SimDevice("paris-01", "Paris, Place de la Republique", 48.8674, 2.3636),
    SimDevice("madrid-01", "Madrid, Puerta del Sol", 40.4169, -3.7035),
    SimDevice("rome-01", "Rome, Piazza Venezia", 41.8960, 12.4823),
    SimDevice("oslo-01", "Oslo, Karl Johans gate", 59.9127, 10.7461),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Demo:
    def __init__(
        self,
        data_dir: Path,
        devices: int,
        seed: int,
        web_port: int,
        broker_port: int | None,
        audio_dir: Path | None,
        model_dir: Path | None,
        broker: str = "auto",
    ) -> None:
        self.data_dir = data_dir
        self.seed = seed
        self.web_port = web_port
        self.broker_port = broker_port or free_port()
        self.audio_dir = audio_dir
        self.model_dir = model_dir
        self.sim = SITES[: max(1, min(devices, len(SITES)))]
        self.broker = EmbeddedBroker(self.broker_port, data_dir / "broker", broker)
        self.db_url = f"sqlite:///{data_dir / 'earwitness.db'}"
        self.settings = CloudSettings(
            database_url=self.db_url,
            mqtt={"host": "127.0.0.1", "port": self.broker_port},
            clips={"url": str(data_dir / "clips")},
            ingest={"client_id": f"demo-ingest-{self.broker_port}", "health_port": 0},
            web={"auth": False, "port": web_port},
        )
        self.engine = make_engine(self.db_url)
        self.agents: list[Any] = []
        self.ingest: IngestService | None = None
        self._web_server: Any = None
        self._web_thread: threading.Thread | None = None
        self._so_stop = threading.Event()
        self._so_thread: threading.Thread | None = None

    def start(self) -> None:
        (self.data_dir / "broker").mkdir(parents=True, exist_ok=True)
        print(f"data directory: {self.data_dir}", flush=True)
        self.broker.start()
        print(f"broker: embedded {self.broker.kind} on 127.0.0.1:{self.broker_port}", flush=True)
        upgrade(self.engine)
        print(f"database: {self.db_url} (migrated)", flush=True)
        self.ingest = IngestService(
            self.settings, self.engine, FileClipStore(self.data_dir / "clips")
        )
        self.ingest.start()
        self._start_web()
        self._start_second_opinion()
        self._start_devices()
        print(
            f"\n  Open http://127.0.0.1:{self.web_port}/ (API docs at /docs). Ctrl-C stops.\n",
            flush=True,
        )

    def _start_second_opinion(self) -> None:
        from cloud.secondopinion.backends import UnavailableBackend, YamnetReference
        from cloud.secondopinion.worker import Worker

        try:
            backend = YamnetReference(self.model_dir)
        except UnavailableBackend as exc:
            print(f"second opinion: off ({exc})", flush=True)
            return
        worker = Worker(
            self.engine,
            FileClipStore(self.data_dir / "clips"),
            [backend],
            budget_per_minute=120,
            name="demo-second-opinion",
        )
        self._so_thread = threading.Thread(
            target=worker.run, args=(self._so_stop,), name="second-opinion", daemon=True
        )
        self._so_thread.start()
        print("second opinion: yamnet-reference worker running", flush=True)

    def _start_web(self) -> None:
        import uvicorn

        from cloud.web.app import create_app

        app = create_app(self.settings, self.engine, FileClipStore(self.data_dir / "clips"))
        self._web_server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.web_port, log_level="warning")
        )
        self._web_thread = threading.Thread(target=self._web_server.run, name="web", daemon=True)
        self._web_thread.start()
        print(f"web: http://127.0.0.1:{self.web_port}/", flush=True)

    def _start_devices(self) -> None:
        import soundfile as sf

        from edge.agent import EdgeAgent
        from edge.config import EdgeConfig
        from edge.soundscape import soundscape

        scapes = self.data_dir / "soundscapes"
        scapes.mkdir(exist_ok=True)
        for i, dev in enumerate(self.sim):
            if self.audio_dir is not None:
                source = {
                    "kind": "file",
                    "path": str(self.audio_dir),
                    "realtime": True,
                    "loop": True,
                }
            else:
                path = scapes / f"{dev.id}.wav"
                if not path.exists():
                    sf.write(path, soundscape(self.seed * 100 + i, 60.0), 16000)
                source = {"kind": "file", "path": str(path), "realtime": True, "loop": True}
            cfg = EdgeConfig(
                device={
                    "id": dev.id,
                    "site": "demo",
                    "name": dev.name,
                    "lat": dev.lat,
                    "lon": dev.lon,
                },
                source=source,
                model={"dir": str(self.model_dir) if self.model_dir else None},
                mqtt={"host": "127.0.0.1", "port": self.broker_port},
                outbox={"path": str(self.data_dir / "outbox" / f"{dev.id}.db")},
                health={"port": 0},
                heartbeat_s=15,
                runtime={"clips": {"every_n": 20}},
            )
            agent = EdgeAgent(cfg)
            agent.start()
            self.agents.append(agent)
            print(
                f"device {dev.id}: {dev.name} ({dev.lat:.4f}, {dev.lon:.4f}),"
                f" source {agent.source.name}",
                flush=True,
            )

    def status_line(self) -> str:
        with self.engine.connect() as conn:
            counts = dict(
                conn.execute(
                    select(Inference.device_id, func.count()).group_by(Inference.device_id)
                ).all()
            )
        parts = [f"{a.cfg.device.id} {counts.get(a.cfg.device.id, 0)}" for a in self.agents]
        return "stored windows: " + ", ".join(parts)

    def heartbeat(self) -> None:
        for agent in self.agents:
            agent.send_heartbeat()

    def stop(self) -> None:
        print("stopping...", flush=True)
        for agent in self.agents:
            agent.stop(flush_s=1.0)
        self._so_stop.set()
        if self._so_thread:
            self._so_thread.join(5)
        if self.ingest:
            self.ingest.stop()
        if self._web_server is not None:
            self._web_server.should_exit = True
            if self._web_thread:
                self._web_thread.join(5)
        self.broker.stop()
        self.engine.dispose()
        print("stopped.", flush=True)


def default_data_dir() -> Path:
    return Path(tempfile.gettempdir()) / "earwitness-demo"


def run(args: Any) -> int:
    demo = Demo(
        args.data_dir or default_data_dir(),
        args.devices,
        args.seed,
        args.port,
        args.broker_port,
        args.audio,
        args.model_dir,
        args.broker,
    )
    stop = stop_on_signals()
    demo.start()
    started = time.monotonic()
    next_report = started + 10
    next_heartbeat = started + 5
    try:
        while not stop.wait(0.5):
            now = time.monotonic()
            if now >= next_heartbeat:
                demo.heartbeat()
                next_heartbeat = now + 15
            if now >= next_report:
                print(demo.status_line(), flush=True)
                next_report = now + 10
            if args.seconds and now - started >= args.seconds:
                break
    finally:
        print(demo.status_line(), flush=True)
        demo.stop()
    return 0
