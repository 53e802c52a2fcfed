"""`earwitness edge`: run the agent. Heavy imports happen inside the handler."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from earwitness.shared.errors import EXIT_FAILED, EXIT_OK
from earwitness.shared.lifecycle import stop_on_signals

log = logging.getLogger("earwitness.edge")


def _config(args: argparse.Namespace) -> Any:
    from earwitness.edge.config import load_edge_settings

    cfg = load_edge_settings(args.config)
    updates: dict[str, Any] = {}
    src = cfg.source.model_dump()
    if args.source is not None:
        if args.source == "-":
            src.update(kind="stdin", path=None)
        elif args.source.startswith(("rtsp://", "http://", "https://", "rtmp://", "udp://")):
            src.update(kind="stream", path=args.source)
        else:
            src.update(kind="file", path=args.source)
    # The replay flags apply to the configured source too, not only to --source.
    if args.fast:
        src["realtime"] = False
    if args.speed is not None:
        src["speed"] = args.speed
    if args.loop:
        src["loop"] = True
    if src != cfg.source.model_dump():
        updates["source"] = src
    device = cfg.device.model_dump()
    for key in ("device_id", "site", "lat", "lon"):
        value = getattr(args, key)
        if value is not None:
            device[{"device_id": "id"}.get(key, key)] = value
    updates["device"] = device
    model = cfg.model.model_dump()
    if args.model_dir is not None:
        model["dir"] = args.model_dir
    if args.head:
        model["heads"] = [*model["heads"], *args.head]
    updates["model"] = model
    if args.outbox is not None:
        updates["outbox"] = {**cfg.outbox.model_dump(), "path": args.outbox}
    if args.mqtt_port is not None or args.mqtt_host is not None:
        mqtt = cfg.mqtt.model_dump()
        if args.mqtt_host:
            mqtt["host"] = args.mqtt_host
        if args.mqtt_port:
            mqtt["port"] = args.mqtt_port
        updates["mqtt"] = mqtt
    if args.health_port is not None:
        updates["health"] = {**cfg.health.model_dump(), "port": args.health_port}
    from earwitness.edge.config import EdgeSettings
    from earwitness.shared.config import format_errors

    try:
        return EdgeSettings(**{**cfg.model_dump(), **updates})
    except Exception as exc:
        from pydantic import ValidationError

        from earwitness.shared.errors import ConfigError

        if isinstance(exc, ValidationError):
            raise ConfigError(format_errors(exc, "command line")) from exc
        raise


def _check_files(cfg: Any) -> None:
    """What --validate-config can check without starting: the files the settings name."""
    from earwitness.shared.errors import ConfigError

    if cfg.source.kind == "file" and cfg.source.path not in (None, "-"):
        from earwitness.edge.sources import FileSource

        FileSource(Path(cfg.source.path), True, False, cfg.source.chunk_ms)  # raises if absent
    for setting, path in (
        ("model.groups_file", cfg.model.groups_file),
        ("model.dir", cfg.model.dir),
        ("mqtt.password_file", cfg.mqtt.password_file),
        ("mqtt.ca_file", cfg.mqtt.ca_file),
        ("mqtt.cert_file", cfg.mqtt.cert_file),
        ("mqtt.key_file", cfg.mqtt.key_file),
    ):
        if path is not None and not Path(path).exists():
            raise ConfigError(f"{setting}: {path} does not exist")


def _cmd_edge(args: argparse.Namespace) -> int:
    cfg = _config(args)
    if args.validate_config:
        from earwitness.shared.heads import load_heads
        from earwitness.shared.model_registry import get_spec

        heads = load_heads(cfg.model.heads, get_spec(cfg.model.name).short_id)
        _check_files(cfg)
        print(
            f"configuration OK: device {cfg.device.site}/{cfg.device.id}, source {cfg.source.kind}"
            + "".join(f", head {h.head_id} ({', '.join(h.classes)})" for h in heads)
        )
        return 0
    from earwitness.edge.agent import EdgeAgent

    agent = EdgeAgent(cfg)
    stop = stop_on_signals()
    agent.start()  # heartbeats and outbox expiry are the agent's own work
    finished_at: float | None = None
    while not stop.wait(0.2):
        if agent.final_heartbeat.is_set() and args.exit_when_done:
            now = time.monotonic()
            if finished_at is None:
                finished_at = now
            if agent.drained() or now - finished_at > args.drain_timeout:
                break
    left = agent.outbox.stats().rows
    agent.stop()
    if agent.capture_error:
        log.error("capture failed: %s", agent.capture_error)
        return EXIT_FAILED
    if args.exit_when_done and left:
        # Scripts that replay files and then move on must see that delivery is not done.
        log.error(
            "%d messages undelivered after --drain-timeout %g s; they stay in the outbox %s"
            " and are sent on the next run",
            left,
            args.drain_timeout,
            cfg.outbox.path,
        )
        return EXIT_FAILED
    return EXIT_OK


def register(sub: Any) -> None:
    p = sub.add_parser("edge", help="run the edge agent (capture, classify, publish)")
    p.add_argument("--config", type=Path, default=None, help="YAML configuration file")
    p.add_argument("--validate-config", action="store_true", help="check configuration and exit")
    p.add_argument(
        "--source",
        default=None,
        help="file or directory to replay, '-' for raw PCM on stdin, or a stream URL",
    )
    p.add_argument("--fast", action="store_true", help="replay files as fast as possible")
    p.add_argument(
        "--speed", type=float, default=None, help="replay files at N x real time (e.g. 10)"
    )
    p.add_argument("--loop", action="store_true", help="replay files forever")
    p.add_argument("--device-id", default=None)
    p.add_argument("--site", default=None)
    p.add_argument("--lat", type=float, default=None)
    p.add_argument("--lon", type=float, default=None)
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument(
        "--head",
        type=Path,
        action="append",
        default=[],
        help="a custom head to run on every window (repeatable; adds to model.heads)",
    )
    p.add_argument("--outbox", type=Path, default=None, help="outbox SQLite file")
    p.add_argument("--mqtt-host", default=None)
    p.add_argument("--mqtt-port", type=int, default=None)
    p.add_argument("--health-port", type=int, default=None, help="0 disables /healthz")
    p.add_argument(
        "--exit-when-done",
        action="store_true",
        help="exit once a finite source has ended and the outbox is acknowledged"
        " (status 1 if messages are still undelivered after --drain-timeout)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="with --exit-when-done: longest wait for acknowledgements",
    )
    p.set_defaults(handler=_cmd_edge)
