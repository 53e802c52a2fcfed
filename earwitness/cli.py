"""The ``earwitness`` command: one subcommand per service or tool.

It sits above every layer: each layer registers its own subcommands (their modules import
nothing heavy at load), and only this module and the demo see edge and cloud together.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from earwitness.cloud import cli as cloud_cli
from earwitness.cloud.heads import cli as heads_cli
from earwitness.edge import cli as edge_cli
from earwitness.shared import __version__
from earwitness.shared import cli as shared_cli
from earwitness.shared.errors import EXIT_FAILED, EXIT_USAGE, EarwitnessError

Handler = Callable[[argparse.Namespace], int]


def _cmd_demo(args: argparse.Namespace) -> int:
    from earwitness.demo import run

    return run(args)


def _register_demo(sub: Any) -> None:
    p = sub.add_parser(
        "demo", help="everything on this machine: broker, SQLite, ingest, web, simulated devices"
    )
    p.add_argument("--devices", type=int, default=4, help="simulated devices (1-6)")
    p.add_argument("--seed", type=int, default=0, help="soundscape seed")
    p.add_argument("--port", type=int, default=8000, help="web port")
    p.add_argument("--broker-port", type=int, default=None, help="default: a free port")
    p.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto")
    p.add_argument(
        "--audio",
        type=Path,
        default=None,
        help="replay this directory on every device instead of the soundscape",
    )
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--data-dir", type=Path, default=None, help="default: $TMPDIR/earwitness-demo")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")
    p.set_defaults(handler=_cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earwitness", description="Edge-to-cloud acoustic monitoring with YAMNet."
    )
    parser.add_argument("--version", action="version", version=f"earwitness {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared_cli.register(sub)
    edge_cli.register(sub)
    cloud_cli.register(sub)
    heads_cli.register(sub)
    _register_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    handler: Handler = args.handler
    try:
        return handler(args)
    except EarwitnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # A database or port the operator can fix: two lines, no traceback (-v keeps it).
        message = None if args.verbose else cloud_cli.explain_error(exc, args)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
