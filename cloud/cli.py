"""Cloud subcommands: ingest, db, web, tokens, second opinion, reports.

Heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from earwitness.shared.lifecycle import stop_on_signals

log = logging.getLogger("earwitness.cloud")


def _settings(args: argparse.Namespace) -> Any:
    from earwitness.cloud.settings import load_settings

    settings = load_settings(args.config)
    updates: dict[str, Any] = {}
    if getattr(args, "database_url", None):
        updates["database_url"] = args.database_url
    if updates:
        settings = settings.model_copy(update=updates)
    return settings


def _engine(settings: Any) -> Any:
    from earwitness.cloud.db.engine import make_engine

    return make_engine(settings.resolved_database_url())


def _migrated_engine(settings: Any) -> Any:
    """Services never migrate at start-up (`earwitness db upgrade` is the prestart step);
    they refuse to run on an outdated schema."""
    from earwitness.cloud.db.migrate import is_current
    from earwitness.shared.errors import ConfigError

    engine = _engine(settings)
    if not is_current(engine):
        raise ConfigError(
            "database schema is not at the latest migration: run `earwitness db upgrade` first"
        )
    return engine


@contextmanager
def _health_endpoint(args: argparse.Namespace, service: Any, prefix: str) -> Iterator[None]:
    """/healthz and /metrics for a service that has no port of its own (second opinion,
    alerts), so compose and Kubernetes probe the service itself, not the process list."""
    from earwitness.shared.metrics import HealthServer, Registry

    if not args.health_port:
        yield
        return
    server = HealthServer(args.health_host, args.health_port, Registry(prefix), service.health)
    server.start()
    try:
        yield
    finally:
        server.stop()


def _health_args(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--health-host", default="127.0.0.1", help="/healthz address (0.0.0.0 in a pod)")
    p.add_argument(
        "--health-port", type=int, default=port, help=f"/healthz port (default {port}; 0: off)"
    )


def _cmd_ingest(args: argparse.Namespace) -> int:
    from earwitness.cloud.clipstore import open_store
    from earwitness.cloud.ingest.consumer import IngestService

    settings = _settings(args)
    settings.require_mqtt()
    if args.validate_config:
        print("configuration OK")
        return 0
    engine = _migrated_engine(settings)
    store = open_store(settings.clips.url, settings.clips.s3_endpoint)
    stop = stop_on_signals()
    with IngestService(settings, engine, store):
        stop.wait()
    return 0


def _cmd_alerts(args: argparse.Namespace) -> int:
    from earwitness.cloud.alerts.service import AlertService
    from earwitness.shared.errors import ConfigError

    settings = _settings(args)
    if settings.alerts.mqtt:
        settings.require_mqtt()
    if not settings.alerts.rules:
        raise ConfigError("alerts.rules is empty: nothing to evaluate (see docs/alerts.md)")
    if args.validate_config:
        rules = ", ".join(r.name for r in settings.alerts.rules)
        print(f"configuration OK: rules {rules}")
        return 0
    engine = _migrated_engine(settings)
    stop = stop_on_signals()
    with AlertService(settings, engine) as service, _health_endpoint(args, service, "alerts"):
        stop.wait()
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from earwitness.cloud.db import migrate

    settings = _settings(args)
    if "database_url" not in settings.model_fields_set:
        # Migrating the embedded default by accident looks like success: say which it is.
        print(
            f"warning: no database given (--database-url, EARWITNESS_DATABASE_URL or"
            f" database_url in --config): using the default {settings.database_url}"
            f" in {Path.cwd()}",
            file=sys.stderr,
        )
    engine = _engine(settings)
    if args.action == "upgrade":
        migrate.upgrade(engine, args.revision or "head")
        print(f"database at revision {migrate.current(engine)}")
    elif args.action == "downgrade":
        migrate.downgrade(engine, args.revision or "-1")
        print(f"database at revision {migrate.current(engine)}")
    elif args.action == "current":
        print(f"current {migrate.current(engine)}, head {migrate.head()}")
    elif args.action == "prune":
        from earwitness.cloud.clipstore import open_store
        from earwitness.cloud.prune import parse_age, prune

        try:
            age = parse_age(args.older_than)
        except ValueError as exc:
            print(f"error: --older-than: {exc}", file=sys.stderr)
            return 2
        store = open_store(settings.clips.url, settings.clips.s3_endpoint)
        counts = prune(
            engine,
            age,
            store,
            args.batch,
            progress=lambda table, n: print(f"{table}: deleted {n} rows", file=sys.stderr),
        )
        print(", ".join(f"{t} {n}" for t, n in counts.items()))
    elif args.action == "partitions":
        from datetime import date

        from earwitness.cloud.db import partitions

        created = partitions.roll(engine)
        if args.since:
            try:
                since = date.fromisoformat(f"{args.since}-01")
            except ValueError:
                print(f"error: --since {args.since!r}: use YYYY-MM", file=sys.stderr)
                return 2
            created = partitions.extend_back(engine, since) + created
        with engine.connect() as conn:
            parts = partitions.list_partitions(conn)
        if not parts:
            print(f"{partitions.TABLE} is not partitioned (SQLite, or before migration 0009)")
            return 0
        if created:
            print(f"created {', '.join(created)}", file=sys.stderr)
        for part in parts:
            print(f"{part.name}\tbelow {part.below or 'MAXVALUE'}\t~{part.rows} rows")
    return 0


def _cmd_web(args: argparse.Namespace) -> int:
    from earwitness.cloud.clipstore import open_store
    from earwitness.cloud.web.app import create_app
    from earwitness.cloud.web.server import WebService
    from earwitness.shared.errors import ConfigError

    settings = _settings(args)
    if args.no_auth:
        if settings.environment == "production":
            raise ConfigError("--no-auth is refused in production")
        settings = settings.model_copy(
            update={"web": settings.web.model_copy(update={"auth": False})}
        )
    if args.validate_config:
        print("configuration OK")
        return 0
    engine = _migrated_engine(settings)
    app = create_app(settings, engine, open_store(settings.clips.url, settings.clips.s3_endpoint))
    host = args.host or settings.web.host
    port = args.port or settings.web.port
    stop = stop_on_signals()
    with WebService(app, host, port) as web:
        print(f"Earwitness web on {web.url} (API docs at /docs)", flush=True)
        stop.wait()
    return 0


def _cmd_tokens(args: argparse.Namespace) -> int:
    from earwitness.cloud.web import auth

    engine = _engine(_settings(args))
    if args.action == "create":
        try:
            token = auth.create_token(engine, args.name, args.scope)
        except auth.TokenNameTaken as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(token)
        print(f"token '{args.name}' ({args.scope}) created; it is shown only once", file=sys.stderr)
        return 0
    if auth.revoke_token(engine, args.name):
        print(f"token '{args.name}' revoked")
        return 0
    print(f"error: no token named '{args.name}'", file=sys.stderr)
    return 1


def _cmd_second_opinion(args: argparse.Namespace) -> int:
    from earwitness.cloud.clipstore import open_store
    from earwitness.cloud.secondopinion.backends import BACKENDS, UnavailableBackend
    from earwitness.cloud.secondopinion.worker import SecondOpinionService, Worker

    settings = _settings(args)
    backends = []
    for name in args.backends.split(","):
        try:
            backends.append(BACKENDS[name](args.model_dir))
        except KeyError:
            print(
                f"error: unknown backend {name!r}; choose from {', '.join(BACKENDS)}",
                file=sys.stderr,
            )
            return 2
        except UnavailableBackend as exc:
            log.warning("backend unavailable, continuing without it: %s", exc)
    engine = _engine(settings)
    worker = Worker(
        engine,
        open_store(settings.clips.url, settings.clips.s3_endpoint),
        backends,
        lease_s=args.lease,
        budget_per_minute=args.budget,
    )
    print(f"second opinion: backends {', '.join(b.name for b in backends)}", flush=True)
    if args.once:
        while worker.run_once(limit=10):
            pass
        print(f"processed {worker.processed}, failed {worker.failed}")
        return 0
    stop = stop_on_signals()
    with (
        SecondOpinionService(worker) as service,
        _health_endpoint(args, service, "second_opinion"),
    ):
        stop.wait()
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from earwitness.cloud import remote_config
    from earwitness.shared import signing

    if args.action == "keygen":
        public = signing.generate(args.key)
        print(signing.public_key_text(public))
        print(
            f"signing key written to {args.key} (mode 0600, keep it off devices); put the line"
            " above in each device's remote_config.public_keys",
            file=sys.stderr,
        )
        return 0
    if (args.file is None and not args.head) or args.target is None:
        print(
            "error: config sign/push need TARGET (site/device) and --file and/or --head",
            file=sys.stderr,
        )
        return 2
    site, _, device = args.target.partition("/")
    settings = _settings(args)
    heads = None
    if args.head:
        heads = [remote_config.head_ref(_head_bytes(settings, h), args.head_url) for h in args.head]
    payload, version = remote_config.signed_payload(
        args.key, site, device, args.file, args.version, heads
    )
    if args.action == "sign":
        sys.stdout.write(payload.decode() + "\n")
        return 0
    settings.require_mqtt()
    remote_config.push(settings.mqtt, site, device, payload)
    print(f"config version {version} pushed to {site}/{device} (retained)")
    return 0


def _head_bytes(settings: Any, spec: str) -> bytes:
    """A head for a config: a file, or one uploaded before (sha256, prefix or name)."""
    from earwitness.cloud.db.engine import transaction
    from earwitness.cloud.db.repo import heads
    from earwitness.shared.errors import ConfigError

    path = Path(spec)
    if path.is_file():
        return path.read_bytes()
    with transaction(_engine(settings)) as session:
        row = heads.find(session, spec)
        if row is None:
            raise ConfigError(
                f"--head {spec}: no such file, and no uploaded head with that name or sha256"
                " (see `earwitness heads list`)"
            )
        return bytes(row.content)


def _cmd_heads(args: argparse.Namespace) -> int:
    import json

    from earwitness.cloud.db.engine import transaction
    from earwitness.cloud.db.repo import heads

    engine = _migrated_engine(_settings(args))
    if args.action == "upload":
        if args.file is None:
            print("error: heads upload needs FILE", file=sys.stderr)
            return 2
        with transaction(engine) as session:
            row, new = heads.add(session, args.file.read_bytes(), args.by)
            print(
                f"{'uploaded' if new else 'already stored'}: {row.head_id} ({row.classes})"
                f" sha256 {row.sha256} for {row.model_id}"
            )
        return 0
    with transaction(engine) as session:
        rows = heads.listing(session)
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "sha256": r.sha256,
                            "head_id": r.head_id,
                            "classes": r.classes.split(","),
                            "model_id": r.model_id,
                            "size_bytes": r.size_bytes,
                            "uploaded_at": r.uploaded_at.isoformat(),
                        }
                        for r in rows
                    ],
                    indent=2,
                )
            )
            return 0
        for r in rows:
            print(
                f"{r.sha256[:16]}  {r.head_id:32}  {r.classes:28}  {r.uploaded_at:%Y-%m-%d %H:%M}"
            )
        if not rows:
            print("no heads uploaded (earwitness heads upload FILE)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    import json

    from earwitness.cloud.trust import trust_figures

    figures = trust_figures(_engine(_settings(args)), args.by, args.backend)
    if args.json:
        print(json.dumps([f.as_dict() for f in figures], indent=2))
        return 0
    print(f"{args.by:<32} {'n':>6} {'agree':>6} {'rate':>6}  95% CI         reviewed (correct)")
    for f in figures:
        print(
            f"{f.key[:32]:<32} {f.n:>6} {f.agree:>6} {f.rate:>6.2f}  "
            f"[{f.low:.2f}, {f.high:.2f}]   {f.reviewed} ({f.reviewed_correct})"
        )
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="YAML settings file")
    p.add_argument("--database-url", default=None, help="SQLAlchemy URL (overrides settings)")


def register(sub: Any) -> None:
    p = sub.add_parser("ingest", help="consume device messages from MQTT into the database")
    _common(p)
    p.add_argument("--validate-config", action="store_true", help="check settings and exit")
    p.set_defaults(handler=_cmd_ingest)

    p = sub.add_parser("alerts", help="correlation rules over detections; alerts, notifications")
    _common(p)
    _health_args(p, 9104)
    p.add_argument("--validate-config", action="store_true", help="check settings and exit")
    p.set_defaults(handler=_cmd_alerts)

    p = sub.add_parser("second-opinion", help="re-score stored clips with another model")
    _common(p)
    _health_args(p, 9103)
    p.add_argument("--backends", default="yamnet-reference", help="comma-separated")
    p.add_argument("--model-dir", type=Path, default=None)
    p.add_argument("--lease", type=float, default=60.0, help="seconds a claim is held")
    p.add_argument("--budget", type=int, default=0, help="clips per minute (0: no limit)")
    p.add_argument("--once", action="store_true", help="drain the queue and exit")
    p.set_defaults(handler=_cmd_second_opinion)

    from earwitness.cloud.secondopinion.vggish.cli import register as register_vggish

    register_vggish(sub)

    p = sub.add_parser("config", help="signed remote config: create a key, sign, push")
    p.add_argument("action", choices=["keygen", "sign", "push"])
    p.add_argument("target", nargs="?", default=None, help="SITE/DEVICE (sign, push)")
    p.add_argument("--key", type=Path, required=True, help="the Ed25519 signing key file")
    p.add_argument("--file", type=Path, default=None, help="runtime settings YAML to sign")
    p.add_argument(
        "--version", type=int, default=None, help="config version (default: unix ms now)"
    )
    p.add_argument(
        "--head",
        action="append",
        default=[],
        help="ship this custom head (a file, or an uploaded head's name or sha256); repeat",
    )
    p.add_argument(
        "--head-url",
        default=None,
        help="web app base URL: devices download heads from it instead of inline",
    )
    _common(p)
    p.set_defaults(handler=_cmd_config)

    p = sub.add_parser("heads", help="custom heads for devices: upload, list")
    p.add_argument("action", choices=["upload", "list"])
    p.add_argument("file", nargs="?", type=Path, default=None, help="head file (upload)")
    p.add_argument("--by", default=None, help="who uploads (recorded)")
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(handler=_cmd_heads)

    p = sub.add_parser("report", help="reports: agreement of edge labels with second opinions")
    p.add_argument("kind", choices=["agreement"])
    p.add_argument("--by", choices=["label", "device"], default="label")
    p.add_argument("--backend", default=None)
    p.add_argument("--json", action="store_true")
    _common(p)
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser("web", help="serve the map, device pages and JSON API")
    _common(p)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--no-auth", action="store_true", help="no API tokens (development only)")
    p.add_argument("--validate-config", action="store_true")
    p.set_defaults(handler=_cmd_web)

    p = sub.add_parser("tokens", help="create or revoke API tokens")
    p.add_argument("action", choices=["create", "revoke"])
    p.add_argument("name", help="a name for the token (who or what uses it)")
    p.add_argument("--scope", choices=["read", "admin"], default="read")
    _common(p)
    p.set_defaults(handler=_cmd_tokens)

    p = sub.add_parser("db", help="database migrations and maintenance")
    p.add_argument(
        "action",
        choices=["upgrade", "downgrade", "current", "prune", "partitions"],
        help="partitions: create the coming months' partitions of inferences and list them",
    )
    p.add_argument("revision", nargs="?", default=None, help="target revision (upgrade/downgrade)")
    p.add_argument(
        "--since", default=None, help="partitions: also create months back to YYYY-MM (imports)"
    )
    p.add_argument("--older-than", default="90d", help="prune: age of rows to delete (90d, 12h)")
    p.add_argument("--batch", type=int, default=5000, help="prune: rows per delete")
    _common(p)
    p.set_defaults(handler=_cmd_db)


def explain_error(exc: BaseException, args: argparse.Namespace) -> str | None:
    """A short message for a failure of the cloud's dependencies (database, ports), or
    None. Looks along the exception's causes: alembic and SQLAlchemy wrap the driver's."""
    import os

    from earwitness.cloud.db.explain import explain

    url = getattr(args, "database_url", None) or os.environ.get("EARWITNESS_DATABASE_URL")
    seen: BaseException | None = exc
    while seen is not None:
        message = explain(seen, url)
        if message:
            return message
        seen = seen.__cause__ or seen.__context__
    return None
