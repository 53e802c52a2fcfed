"""Helpers shared by the bench scripts: where the data is and what machine we are on."""

from __future__ import annotations

import os
import platform
from pathlib import Path

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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]
