"""Screenshots of the running demo for README.md: `earwitness demo` on free ports, then
Debian's Chromium (headless, offline basemap) opens the map, a device page and the API
docs once detections have arrived.

Usage: python docs/screenshots.py [--wait 90] [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wait", type=float, default=90, help="seconds of demo before shooting")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="ew-shots-"))
    demo = subprocess.Popen(
        [sys.executable, "-m", "earwitness", "demo", "--port", str(port), "--data-dir", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/v1/health", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or demo.poll() is not None:
                    print("error: the demo did not start", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        print(f"demo up at {base}; letting it run {args.wait:.0f} s", flush=True)
        time.sleep(args.wait)
        args.out.mkdir(parents=True, exist_ok=True)
        chromium = shutil.which("chromium") or "chromium"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            shots = [
                ("map.png", f"{base}/?range=1h"),
                ("device.png", f"{base}/devices/vienna-01?range=1h"),
                ("api-docs.png", f"{base}/docs"),
            ]
            for name, url in shots:
                page.goto(url, wait_until="networkidle")
                page.wait_for_timeout(2500)  # tiles, charts and the feed settle
                page.screenshot(path=str(args.out / name))
                print(f"wrote {args.out / name}", flush=True)
            browser.close()
    finally:
        os.killpg(demo.pid, signal.SIGTERM)
        demo.wait(30)
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
