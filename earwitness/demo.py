"""`earwitness demo`: the whole system in one process tree on embedded defaults.

An embedded broker, SQLite, ingest, the web app on http://127.0.0.1:8000 and several
simulated devices at real coordinates listening to a synthesized soundscape (or to a
directory of audio files). Ctrl-C stops everything.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from earwitness.cloud.alerts.service import AlertService
from earwitness.cloud.broker import EmbeddedBroker
from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine, transaction
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.repo import inferences
from earwitness.cloud.ingest.consumer import IngestService
from earwitness.cloud.secondopinion.worker import SecondOpinionService
from earwitness.cloud.settings import CloudSettings
from earwitness.edge.agent import EdgeAgent
from earwitness.shared.lifecycle import stop_on_signals
from earwitness.shared.service import DEFAULT_STOP_TIMEOUT_S, Service

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


# What the demo's soundscape can raise: its devices are cities apart, so correlations
# only ever pair sounds on one device.
DEMO_RULES: list[dict[str, Any]] = [
    {
        "name": "distress",
        "severity": "critical",
        "all_of": [{"label": "distress", "min_score": 0.3}, {"label": "alarm", "min_score": 0.3}],
        "within_s": 30,
        "within_m": 150,
    },
    {
        "name": "alarm",
        "severity": "warning",
        "any_of": [{"label": "alarm", "min_score": 0.5}],
        "rate_limit_s": 300,
    },
]


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
            alerts={"rules": DEMO_RULES, "mqtt": True},
        )
        self.engine = make_engine(self.db_url)
        self.agents: list[Any] = []
        # Started in order, stopped in reverse: devices first, the broker last.
        self.services: list[Service] = []

    def start(self) -> None:
        (self.data_dir / "broker").mkdir(parents=True, exist_ok=True)
        print(f"data directory: {self.data_dir}", flush=True)
        self.broker.start()
        print(f"broker: embedded {self.broker.kind} on 127.0.0.1:{self.broker_port}", flush=True)
        upgrade(self.engine)
        print(f"database: {self.db_url} (migrated)", flush=True)
        self._start(
            IngestService(self.settings, self.engine, FileClipStore(self.data_dir / "clips"))
        )
        self._start_web()
        self._start_second_opinion()
        self._start(AlertService(self.settings, self.engine))
        print("alerts: " + ", ".join(r["name"] for r in DEMO_RULES), flush=True)
        self._start_devices()
        print(
            f"\n  Open http://127.0.0.1:{self.web_port}/ (API docs at /docs). Ctrl-C stops.\n",
            flush=True,
        )

    def _start_second_opinion(self) -> None:
        from earwitness.cloud.secondopinion.backends import UnavailableBackend, YamnetReference
        from earwitness.cloud.secondopinion.worker import Worker

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
        self._start(SecondOpinionService(worker))
        print("second opinion: yamnet-reference worker running", flush=True)

    def _start(self, service: Service) -> None:
        self.services.append(service)  # appended first: a failed start is stopped too
        service.start()

    def _start_web(self) -> None:
        from earwitness.cloud.web.app import create_app
        from earwitness.cloud.web.server import WebService

        app = create_app(self.settings, self.engine, FileClipStore(self.data_dir / "clips"))
        web = WebService(app, "127.0.0.1", self.web_port)
        self._start(web)
        print(f"web: {web.url}", flush=True)

    def _start_devices(self) -> None:
        import soundfile as sf

        from earwitness.edge.config import EdgeSettings
        from earwitness.edge.soundscape import soundscape

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
            cfg = EdgeSettings(
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
            self._start(agent)
            self.agents.append(agent)
            print(
                f"device {dev.id}: {dev.name} ({dev.lat:.4f}, {dev.lon:.4f}),"
                f" source {agent.source.name}",
                flush=True,
            )

    def status_line(self) -> str:
        with transaction(self.engine) as session:
            counts = {c.device_id: c.count for c in inferences.counts_per_device(session)}
        parts = [f"{a.cfg.device.id} {counts.get(a.cfg.device.id, 0)}" for a in self.agents]
        return "stored windows: " + ", ".join(parts)

    def stop(self) -> None:
        print("stopping...", flush=True)
        for service in reversed(self.services):
            # Agents flush for a second: the demo's data is disposable.
            service.stop(1.0 if isinstance(service, EdgeAgent) else DEFAULT_STOP_TIMEOUT_S)
        self.services.clear()
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
    try:
        demo.start()
        started = time.monotonic()
        next_report = started + 10
        while not stop.wait(0.5):
            now = time.monotonic()
            if now >= next_report:
                print(demo.status_line(), flush=True)
                next_report = now + 10
            if args.seconds and now - started >= args.seconds:
                break
    finally:
        if demo.agents:
            print(demo.status_line(), flush=True)
        demo.stop()
    return 0
