"""Helpers shared by the bench scripts: where the data is and what machine we are on."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EARWITNESS_SHARED", REPO.parent / "shared")).resolve()
MODELS = Path(os.environ.get("EARWITNESS_MODEL_DIR", SHARED / "models"))
ESC50 = SHARED / "audio" / "esc50"


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
    )


def local_mariadb() -> Any:
    """The local MariaDB server's process (a psutil.Process), None when it is elsewhere."""
    import psutil

    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] in ("mariadbd", "mysqld"):
            return proc
    return None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


MODEL_ID = "yamnet-int8@0a266465c467"  # what a simulated device says it runs


def device_message(
    kind: str,
    site: str,
    device: str,
    epoch: str,
    seq: int,
    now: str,
    *,
    score: float = 0.5,
    lat: float = 52.1,
    lon: float = 4.3,
    uptime_s: float = 1.0,
    version: str = "bench",
    outbox_rows: int = 1,
    outbox_min_seq: int = 0,
) -> bytes:
    """The JSON of an inference or heartbeat as an agent sends it, written directly (the
    fleet simulator makes 5,000 a second on the cores it shares with what it measures).
    ``now`` is an RFC 3339 timestamp."""
    from earwitness.shared.messages import message_id

    head = (
        f'{{"v":1,"kind":"{kind}","id":"{message_id(device, epoch, seq)}","site":"{site}",'
        f'"device":"{device}","ts":"{now}","epoch":"{epoch}","seq":{seq},'
    )
    if kind == "inference":
        body = (
            f'"window_start":"{now}","window_s":0.96,"top":[{{"index":0,"mid":"/m/09x0r",'
            f'"name":"Speech","score":{score}}}],"groups":{{"speech":{score}}},"dbfs":-42.5,'
            f'"leq_dbfs":-44.0,"inference_ms":2.1,"model":"{MODEL_ID}",'
            f'"location":{{"lat":{lat},"lon":{lon}}}}}'
        )
    elif kind == "heartbeat":
        body = (
            f'"uptime_s":{uptime_s:.1f},"version":"{version}","model":"{MODEL_ID}",'
            f'"queue_depth":0,"windows_processed":{seq},"windows_dropped":0,'
            f'"outbox_rows":{outbox_rows},"outbox_bytes":0,"outbox_dropped":0,'
            f'"outbox_min_seq":{outbox_min_seq},"clips_sent":0,"clips_blocked_privacy":0}}'
        )
    else:
        raise ValueError(f"device_message: no simulated {kind!r} message")
    return (head + body).encode()
