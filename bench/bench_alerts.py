"""Alert latency and rule-engine throughput.

Prints, in one run:
  engine   - RuleEngine.add over synthetic detections from 100 devices (every one a class
             the distress rule names, so none is filtered out early): events/s, in process
  latency  - the real path: 100 simulated devices publish inferences (1/s each) and events
             to Mosquitto; ingest writes them to MariaDB; `AlertService` polls the events,
             correlates glass_break + scream at neighbouring devices and POSTs a signed
             webhook to a local HTTP server. Latency = webhook received - the scream (the
             last piece of evidence) published. One process holds publishers, ingest, the
             alert service and the receiver, so they share these 2 cores and one GIL.

Usage: python bench/bench_alerts.py [--devices 100] [--incidents 50] [--events 200000]
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json

from bench._common import machine, percentile
from earwitness.cloud.alerts.engine import Detection, RuleEngine
from earwitness.cloud.alerts.rules import Rule
from earwitness.cloud.alerts.service import AlertService
from earwitness.cloud.db.engine import make_engine
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.settings import CloudSettings
from earwitness.shared.messages import EventMessage, encode
from earwitness.shared.topics import Kind
from tests.alert_helpers import DISTRESS_RULE, WEBHOOK_SECRET, WebhookReceiver
from tests.factories import Device
from tests.ingest_helpers import Publisher, ingest_settings, running_ingest
from tests.services import MQTT_HOST, MQTT_PORT, mariadb_database, unique

M_PER_DEG_LAT = 111_195.0
PAIR_GAP_M = 100.0  # the two devices of a pair: neighbours for the 150 m rule
PAIRS_APART_M = 5_000.0  # pairs never correlate with each other


def fleet(site: str, n: int, t0: datetime) -> list[Device]:
    """Pairs of neighbours 100 m apart, pairs 5 km apart on a grid 50 pairs wide."""
    devices = []
    m_per_deg_lon = M_PER_DEG_LAT * math.cos(math.radians(48.0))
    for i in range(n):
        pair, member = divmod(i, 2)
        row, col = divmod(pair, 50)
        north = row * PAIRS_APART_M + member * PAIR_GAP_M
        east = col * PAIRS_APART_M
        location = (48.0 + north / M_PER_DEG_LAT, 10.0 + east / m_per_deg_lon)
        devices.append(Device(site, f"d{i:05d}", location=location, t0=t0))
    return devices


# -- engine ------------------------------------------------------------------------------
def bench_engine(n_events: int, n_devices: int) -> None:
    rng = random.Random(7)
    devices = fleet("s", n_devices, datetime.now(UTC))
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    detections = []
    for i in range(n_events):
        dev = devices[rng.randrange(n_devices)]
        assert dev.location is not None
        detections.append(
            Detection(
                key=f"{dev.device}/e{i}",
                row_id=i + 1,
                device_id=dev.device,
                site="s",
                label=rng.choice(("glass_break", "scream")),
                score=rng.uniform(0.3, 1.0),
                # every device about one event per second of device time
                at=t0 + timedelta(seconds=i / n_devices + rng.uniform(-2, 2)),
                lat=dev.location.lat,
                lon=dev.location.lon,
            )
        )
    engine = RuleEngine([Rule.model_validate(DISTRESS_RULE)])
    decisions = 0
    t_start = time.perf_counter()
    for d in detections:
        decisions += len(engine.add(d))
    elapsed = time.perf_counter() - t_start
    print(
        f"engine: {n_events:,} detections from {n_devices} devices in {elapsed:.2f} s = "
        f"{n_events / elapsed:,.0f} events/s ({decisions:,} decisions)"
    )


# -- latency -----------------------------------------------------------------------------
def arrivals(receiver: WebhookReceiver) -> dict[tuple[str, str], float]:
    """When each alert first arrived, keyed by its newest evidence (device, label)."""
    first: dict[tuple[str, str], float] = {}
    for (_headers, body), at in zip(receiver.requests, receiver.arrived_at, strict=False):
        last = max(json.loads(body)["evidence"], key=lambda e: e["at"])
        first.setdefault((last["device"], last["label"]), at)
    return first


def event_message(dev: Device, seq: int, label: str, at: datetime, score: float) -> bytes:
    return encode(
        EventMessage(
            **dev._base(seq),  # type: ignore[arg-type]
            event_id=f"ev-{dev.device}-{seq}",
            phase="start",
            label=label,
            group=None,
            started_at=at,
            duration_s=1.0,
            peak_score=score,
            windows=2,
            peak_dbfs=-12.0,
            location=dev.location,
        )
    )


def bench_latency(n_devices: int, n_incidents: int) -> None:
    site = unique("ba")
    t0 = datetime.now(UTC) - timedelta(hours=1)  # message ts: 0.48 s per seq, never ahead
    devices = fleet(site, n_devices, t0)
    seqs = {d.device: 0 for d in devices}
    lock = threading.Lock()

    def next_seq(dev: Device) -> int:
        with lock:
            seqs[dev.device] += 1
            return seqs[dev.device]

    receiver = WebhookReceiver()
    receiver.start()
    publisher = Publisher()
    stop = threading.Event()
    published: dict[tuple[str, str], float] = {}

    def background() -> None:
        """Every device: an inference each second, now and then an unrelated event."""
        rng = random.Random(3)
        while not stop.is_set():
            tick = time.monotonic()
            batch = []
            for dev in devices:
                batch.append((dev.topic(Kind.INFERENCE), encode(dev.inference(next_seq(dev)))))
                if rng.random() < 0.05:
                    label = rng.choice(("dog", "alarm", "glass_break", "scream"))
                    score = 0.3 if label in ("glass_break", "scream") else 0.8
                    seq = next_seq(dev)
                    batch.append(
                        (
                            dev.topic(Kind.EVENT),
                            event_message(dev, seq, label, datetime.now(UTC), score),
                        )
                    )
            publisher.publish_many(batch)
            stop.wait(max(0.0, 1.0 - (time.monotonic() - tick)))

    with mariadb_database() as url, tempfile.TemporaryDirectory() as clips:
        engine = make_engine(url)
        upgrade(engine)
        settings = CloudSettings(
            database_url=url,
            mqtt={"host": MQTT_HOST, "port": MQTT_PORT},
            alerts={
                "rules": [DISTRESS_RULE],
                "webhooks": [
                    {
                        "name": "ops",
                        "url": receiver.url,
                        "secret": WEBHOOK_SECRET,
                    }
                ],
                "mqtt": False,
            },
        )
        with running_ingest(ingest_settings(url, site), Path(clips)):
            alerts = AlertService(settings, engine)
            alerts.start()
            feeder = threading.Thread(target=background, daemon=True)
            feeder.start()
            time.sleep(3)
            rng = random.Random(11)
            pairs = list(range(n_devices // 2))
            print(
                f"latency: {n_devices} devices, {n_incidents} incidents "
                f"(glass_break, then a scream 2 s later at the neighbour 100 m away)"
            )
            for k in range(n_incidents):
                pair = pairs[k % len(pairs)]
                a, b = devices[2 * pair], devices[2 * pair + 1]
                now = datetime.now(UTC)
                publisher.publish(
                    a.topic(Kind.EVENT), event_message(a, next_seq(a), "glass_break", now, 0.9)
                )
                time.sleep(rng.uniform(0.3, 0.8))
                scream = event_message(b, next_seq(b), "scream", now + timedelta(seconds=2), 0.85)
                published[(b.device, "scream")] = time.time()
                publisher.publish(b.topic(Kind.EVENT), scream)
                # The next incident on this pair must be outside the 10 s window.
                time.sleep(rng.uniform(0.6, 1.2))
                if (k + 1) % 10 == 0:
                    print(f"  {k + 1}/{n_incidents} incidents sent", flush=True)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not published.keys() <= arrivals(receiver).keys():
                time.sleep(0.1)
            stop.set()
            feeder.join(5)
            health = alerts.health()
            alerts.stop()
        engine.dispose()
    publisher.close()
    receiver.stop()

    arrived = arrivals(receiver)
    latencies = [arrived[k] - t for k, t in published.items() if k in arrived]
    missing = len(published) - len(latencies)
    sent = sum(seqs.values())
    print(
        f"  {sent:,} messages published, {len(receiver.requests)} webhook requests, "
        f"{len(latencies)}/{len(published)} incidents alerted, {missing} missing"
    )
    if latencies:
        print(
            f"  last evidence published -> webhook received: p50 {percentile(latencies, 50):.2f} s"
            f", p95 {percentile(latencies, 95):.2f} s, max {max(latencies):.2f} s"
        )
    print(f"  alert service: {health.details}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--incidents", type=int, default=50)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    logging.getLogger("earwitness").setLevel(logging.ERROR)  # each alert is logged: quiet
    if args.incidents > args.devices // 2 * 5:
        parser.error("--incidents: at most 5 per device pair in one run")
    print(f"machine: {machine()}")
    bench_engine(args.events, args.devices)
    if not args.skip_latency:
        bench_latency(args.devices, args.incidents)


if __name__ == "__main__":
    main()
