"""Build the product's images and bring up docker-compose.yml for real, on podman.

`make compose-test` (and .ci/run) runs this. It builds the stand-in base images
(tests/containers/standins.sh), both project images from the unmodified Dockerfiles, then
the unmodified compose file in a clean copy of the tracked tree with freshly generated
secrets, as docs/deploy.md tells an operator to. podman-compose 1.0.3 ignores `depends_on`
conditions and podman schedules no healthchecks without systemd, so this starts the
services in dependency order and runs each healthcheck itself. It then checks end to end
that the simulated device's inferences, events, clips and second opinions reach MariaDB and
/api/v1, and that the map page draws the device in Chromium; then tears everything down.

Any failure exits non-zero with the failing step and the last log lines of every service.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROJECT = "earwitness-ci"
CLOUD_IMAGE = "localhost/earwitness/cloud:ci"
EDGE_IMAGE = "localhost/earwitness/edge:ci"
WEB = "http://127.0.0.1:8000"
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]  # type: ignore[index]
# Order of start-up: each group waits for the previous one (the compose file's depends_on).
STAGES: tuple[tuple[str, ...], ...] = (
    ("mosquitto", "mariadb"),
    ("migrate",),
    ("ingest", "second-opinion", "web"),
    ("edge-sim",),
)
GALERA_FILE = "docker-compose.galera.yml"
GALERA_NODES = ("galera-1", "galera-2", "galera-3")
# With the Galera file, `mariadb` is HAProxy: the nodes start first, one after the other
# (a joiner's first start is a full state transfer from a synced node).
GALERA_STAGES: tuple[tuple[str, ...], ...] = (
    *((node,) for node in GALERA_NODES),
    ("mosquitto", "mariadb"),
    *STAGES[1:],
)
HEALTH_TIMEOUT_S = 180  # the slowest first start: MariaDB initialising its data directory
FLOW_TIMEOUT_S = 300  # edge-sim's first clip, then a second opinion on it
PUBLISHED_PORTS = (8000, 8883)  # docker-compose.yml: web, device TLS listener
TABLES = ("devices", "inferences", "events", "clips", "second_opinions")


class Failed(Exception):
    """A step of the compose test failed; the message says which and why."""


@dataclass(frozen=True)
class Layout:
    """Which compose files are brought up, in which order, and where SQL is run."""

    files: tuple[str, ...] = ("docker-compose.yml",)
    stages: tuple[tuple[str, ...], ...] = STAGES
    sql_node: str = "mariadb"

    @property
    def compose(self) -> list[str]:
        return ["podman-compose", "-p", PROJECT, *(a for f in self.files for a in ("-f", f))]


PLAIN = Layout()
GALERA = Layout(("docker-compose.yml", GALERA_FILE), GALERA_STAGES, GALERA_NODES[0])


def log(message: str) -> None:
    print(f"[compose-test {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    quiet: bool = False,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), cwd=cwd, env=env, text=True, capture_output=True)
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise Failed(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{tail}")
    if not quiet and proc.returncode != 0:
        log(f"{' '.join(cmd[:3])} exited {proc.returncode}")
    return proc


def podman_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(HERE / "containers.conf"))
    env["BUILDAH_FORMAT"] = "docker"  # OCI format would drop HEALTHCHECK
    return env


def copy_tree(dest: Path) -> None:
    """The tracked files only: what a fresh clone holds (no venv, node_modules, secrets)."""
    files = run(["git", "ls-files", "-z"], cwd=ROOT).stdout.split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def build_images(
    tree: Path, env: dict[str, str], timings: dict[str, float], standins: bool
) -> None:
    if standins:
        t = time.monotonic()
        run([str(HERE / "standins.sh")], env=env)
        timings["stand-in images"] = time.monotonic() - t
    for image, dockerfile, name in (
        (CLOUD_IMAGE, "deploy/Dockerfile.cloud", "cloud image"),
        (EDGE_IMAGE, "deploy/Dockerfile.edge", "edge image"),
    ):
        log(f"building {name} from {dockerfile}")
        t = time.monotonic()
        # Also tagged with the release, the name docker-compose.yml uses by default.
        release = image.replace(":ci", f":{VERSION}")
        run(
            [
                "podman",
                "build",
                "--format",
                "docker",
                "-t",
                image,
                "-t",
                release,
                "-f",
                dockerfile,
                ".",
            ],
            cwd=tree,
            env=env,
        )
        timings[name] = time.monotonic() - t
        log(f"{name} built in {timings[name]:.0f} s")


def password(output: str) -> str:
    found = re.search(r"^password: (\S+)$", output, re.M)
    if not found:
        raise Failed(f"onboard-device.sh printed no password:\n{output}")
    return found.group(1)


def make_secrets(tree: Path, layout: Layout) -> dict[str, str]:
    """Certificates, broker users and .env, exactly as docs/deploy.md's compose steps."""
    run(
        [
            "deploy/make-certs.sh",
            "--out",
            "deploy/secrets/certs",
            "--host",
            "localhost",
            "--host",
            "mosquitto",
        ],
        cwd=tree,
    )
    onboard = ["deploy/onboard-device.sh", "--broker-dir", "deploy/secrets/broker"]
    secrets = {
        "INGEST_MQTT_PASSWORD": password(run([*onboard, "--service", "ingest"], cwd=tree).stdout),
        "HEALTH_MQTT_PASSWORD": password(run([*onboard, "--service", "health"], cwd=tree).stdout),
        "SIM_DEVICE_MQTT_PASSWORD": password(
            run([*onboard, "--site", "compose", "sim-01"], cwd=tree).stdout
        ),
        "MARIADB_PASSWORD": os.urandom(12).hex(),
        "MARIADB_ROOT_PASSWORD": os.urandom(12).hex(),
        "EARWITNESS_CLOUD_IMAGE": CLOUD_IMAGE,
        "EARWITNESS_EDGE_IMAGE": EDGE_IMAGE,
        "COMPOSE_PROJECT_NAME": PROJECT,
    }
    if layout is GALERA:
        secrets["GALERA_SST_PASSWORD"] = os.urandom(12).hex()
    (tree / ".env").write_text("".join(f"{k}={v}\n" for k, v in secrets.items()))
    return secrets


def seed_models(models: Path, env: dict[str, str]) -> None:
    """No internet here: put the model files into the stack's model volume, as an operator
    on an air-gapped site copies them; `earwitness models fetch` then verifies them."""
    volume = f"{PROJECT}_models"
    run(["podman", "volume", "create", volume], env=env)
    run(
        [
            "podman",
            "run",
            "--rm",
            "-v",
            f"{volume}:/models",
            "-v",
            f"{models}:/src:ro",
            "localhost/debian:bookworm",
            "sh",
            "-c",
            "cp /src/* /models/ && chmod -R a+rX /models",
        ],
        env=env,
    )


def container(service: str) -> str:
    return f"{PROJECT}_{service}_1"


def wait_healthy(service: str, env: dict[str, str]) -> float:
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < HEALTH_TIMEOUT_S:
        state = run(
            ["podman", "inspect", "-f", "{{.State.Status}}", container(service)],
            env=env,
            check=False,
            quiet=True,
        )
        if state.stdout.strip() in ("exited", "stopped"):
            raise Failed(f"{service} exited before it became healthy")
        probe = run(
            ["podman", "healthcheck", "run", container(service)], env=env, check=False, quiet=True
        )
        if probe.returncode == 0:
            return time.monotonic() - start
        last = (probe.stdout + probe.stderr).strip()
        time.sleep(2)
    raise Failed(f"{service} not healthy after {HEALTH_TIMEOUT_S} s: {last[-300:]}")


def wait_exited_ok(service: str, env: dict[str, str]) -> float:
    start = time.monotonic()
    code = run(["podman", "wait", container(service)], env=env).stdout.strip()
    if code != "0":
        raise Failed(f"{service} exited {code}")
    return time.monotonic() - start


def ports_free() -> None:
    """The compose file publishes fixed ports; say which is taken rather than fail later."""
    import socket

    for port in PUBLISHED_PORTS:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                raise Failed(f"port {port} on 127.0.0.1 is in use; docker-compose.yml publishes it")


def start_stack(tree: Path, env: dict[str, str], timings: dict[str, float], layout: Layout) -> None:
    ports_free()
    stack_start = time.monotonic()
    for stage in layout.stages:
        run([*layout.compose, "up", "-d", "--no-deps", *stage], cwd=tree, env=env)
        for service in stage:
            if service == "migrate":
                took = wait_exited_ok(service, env)
                log(f"{service}: exited 0 after {took:.0f} s")
            else:
                took = wait_healthy(service, env)
                log(f"{service}: healthy after {took:.0f} s")
    timings["stack healthy"] = time.monotonic() - stack_start


def sql(query: str, secrets: dict[str, str], env: dict[str, str], node: str = "mariadb") -> str:
    out = run(
        [
            "podman",
            "exec",
            container(node),
            "mariadb",
            "-uroot",
            f"-p{secrets['MARIADB_ROOT_PASSWORD']}",
            "earwitness",
            "-N",
            "-e",
            query,
        ],
        env=env,
    )
    return out.stdout.strip()


SERVER_SETTINGS = "SELECT @@character_set_server, @@collation_server, @@time_zone"
EXPECTED_SETTINGS = "utf8mb4\tutf8mb4_unicode_ci\t+00:00"  # deploy/mariadb/earwitness.cnf


def check_server_settings(secrets: dict[str, str], env: dict[str, str], node: str) -> None:
    got = sql(SERVER_SETTINGS, secrets, env, node)
    if got != EXPECTED_SETTINGS:
        raise Failed(f"{node}: server settings {got!r}, want {EXPECTED_SETTINGS!r}")


def wait_for_data(secrets: dict[str, str], env: dict[str, str], node: str) -> dict[str, int]:
    query = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {t})" for t in TABLES)
    start = time.monotonic()
    counts: dict[str, int] = {}
    while time.monotonic() - start < FLOW_TIMEOUT_S:
        counts = dict(zip(TABLES, map(int, sql(query, secrets, env, node).split()), strict=True))
        if all(counts.values()):
            log(f"end to end after {time.monotonic() - start:.0f} s: {counts}")
            return counts
        time.sleep(5)
    raise Failed(f"not every table filled after {FLOW_TIMEOUT_S} s: {counts}")


def wsrep(node: str, name: str, secrets: dict[str, str], env: dict[str, str]) -> str:
    query = (
        f"SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='{name}'"
    )
    return sql(query, secrets, env, node)


def check_cluster(secrets: dict[str, str], env: dict[str, str]) -> None:
    for node in GALERA_NODES:
        size = wsrep(node, "WSREP_CLUSTER_SIZE", secrets, env)
        state = wsrep(node, "WSREP_LOCAL_STATE_COMMENT", secrets, env)
        if size != str(len(GALERA_NODES)) or state != "Synced":
            raise Failed(f"{node}: cluster size {size}, state {state}; want 3, Synced")
    log(f"Galera: {', '.join(GALERA_NODES)} synced, cluster size {len(GALERA_NODES)}")


def newest_inference(secrets: dict[str, str], env: dict[str, str], node: str) -> int:
    return int(sql("SELECT COALESCE(MAX(id), 0) FROM inferences", secrets, env, node))


def wait_new_rows(secrets: dict[str, str], env: dict[str, str], node: str, why: str) -> float:
    """New inference rows keep arriving (through HAProxy, whichever node takes them)."""
    before = newest_inference(secrets, env, node)
    start = time.monotonic()
    while time.monotonic() - start < FLOW_TIMEOUT_S:
        time.sleep(3)
        if newest_inference(secrets, env, node) > before:
            took = time.monotonic() - start
            log(f"{why}: new inferences stored after {took:.0f} s (read on {node})")
            return took
    raise Failed(f"{why}: no new inference stored within {FLOW_TIMEOUT_S} s")


def same_rows_on_every_node(secrets: dict[str, str], env: dict[str, str]) -> int:
    """Every node holds the same inferences up to one id. Writers keep committing, so a
    node may briefly miss a row with a lower id from another writer: asked again until
    they agree (wsrep_sync_wait makes each read wait for what the cluster committed)."""
    deadline = time.monotonic() + 60
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        top = newest_inference(secrets, env, GALERA_NODES[0])
        counts = {
            node: int(
                sql(
                    f"SET SESSION wsrep_sync_wait = 1; SELECT COUNT(*) FROM inferences WHERE id <= {top}",
                    secrets,
                    env,
                    node,
                )
            )
            for node in GALERA_NODES
        }
        if len(set(counts.values())) == 1:
            log(f"Galera: every node holds the same {counts[GALERA_NODES[0]]} inferences")
            return counts[GALERA_NODES[0]]
        time.sleep(2)
    raise Failed(f"Galera nodes disagree on the inferences stored: {counts}")


def ack_mark(secrets: dict[str, str], env: dict[str, str], node: str) -> int:
    """sim-01's ack watermark: every seq up to it is stored."""
    query = "SELECT COALESCE(MAX(seq), -1) FROM ack_watermarks WHERE device_id = 'sim-01'"
    return int(sql(query, secrets, env, node))


def no_gap_past(mark: int, secrets: dict[str, str], env: dict[str, str], node: str) -> None:
    """Nothing lost across the fault: sim-01's watermark moves past where it stood, with
    no stored run left waiting above a gap (what a lost message leaves)."""
    deadline = time.monotonic() + FLOW_TIMEOUT_S
    pending = now = 0
    while time.monotonic() < deadline:
        now = ack_mark(secrets, env, node)
        pending = int(sql("SELECT COUNT(*) FROM pending_seqs", secrets, env, node))
        if now > mark and not pending:
            log(f"no gap: sim-01 acknowledged up to seq {now} (was {mark}), no pending runs")
            return
        time.sleep(3)
    raise Failed(f"after the node fault: watermark {now} (was {mark}), {pending} pending runs")


def check_galera(
    tree: Path, secrets: dict[str, str], env: dict[str, str], timings: dict[str, float]
) -> None:
    """The cluster formed; then galera-1, the node HAProxy sends every connection to, is
    SIGKILLed while the device streams: writes move to a backup node, and galera-1 is
    brought back as docs/deploy.md says (GALERA_1_BOOTSTRAP=--wsrep-on=ON: it joins,
    never bootstraps a second cluster). Nothing is dead-lettered."""
    check_cluster(secrets, env)
    same_rows_on_every_node(secrets, env)
    first, survivor = GALERA_NODES[0], GALERA_NODES[1]
    mark_at_kill = ack_mark(secrets, env, first)
    log(f"SIGKILL {first} (the node taking writes; sim-01 acknowledged up to seq {mark_at_kill})")
    run(["podman", "kill", "--signal", "KILL", container(first)], env=env)
    timings["writes moved after node SIGKILL"] = wait_new_rows(
        secrets, env, survivor, f"{first} killed"
    )
    run(["podman", "rm", "-f", container(first)], env=env)
    rejoin = {**env, "GALERA_1_BOOTSTRAP": "--wsrep-on=ON"}
    run([*GALERA.compose, "up", "-d", "--no-deps", first], cwd=tree, env=rejoin)
    timings["node rejoined"] = wait_healthy(first, env)
    log(f"{first}: rejoined and synced after {timings['node rejoined']:.0f} s")
    check_cluster(secrets, env)
    wait_new_rows(secrets, env, first, f"{first} back")
    same_rows_on_every_node(secrets, env)
    dead = int(sql("SELECT COUNT(*) FROM dead_letters", secrets, env, first))
    if dead:
        raise Failed(f"{dead} dead letter(s) after the node fault")
    no_gap_past(mark_at_kill, secrets, env, first)


def api(path: str, token: str) -> object:
    request = urllib.request.Request(WEB + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def check_api(env: dict[str, str]) -> str:
    token = (
        run(
            [
                "podman",
                "exec",
                container("web"),
                "earwitness",
                "tokens",
                "create",
                f"compose-test-{os.urandom(3).hex()}",
            ],
            env=env,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    devices = api("/api/v1/devices", token)
    ids = [d["id"] for d in devices] if isinstance(devices, list) else []
    if "sim-01" not in ids:
        raise Failed(f"/api/v1/devices does not list sim-01: {devices}")
    seen = {}
    for path in ("inferences", "events", "clips", "second-opinions"):
        body = api(f"/api/v1/{path}?device=sim-01&limit=5", token)
        items = body.get("items", body) if isinstance(body, dict) else body
        if not items:
            raise Failed(f"/api/v1/{path} is empty for sim-01")
        seen[path] = len(items)
    log(f"/api/v1: devices {ids}, newest rows {seen}")
    return token


def check_map(token: str, artifacts: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.browser import browser

    errors: list[str] = []
    failed: list[str] = []
    with browser(http_credentials={"username": "ci", "password": token}) as ctx:
        page = ctx.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("requestfailed", lambda r: failed.append(r.url))
        page.goto(WEB + "/", wait_until="load")
        page.locator(".ew-device").first.wait_for(timeout=20_000)
        page.locator("path.ew-land").first.wait_for(state="attached", timeout=20_000)
        artifacts.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(artifacts / "compose-map.png"))
        devices = page.locator(".ew-device").count()
    # Offline, the OpenStreetMap probe tile fails (the page then keeps the offline basemap);
    # that failure and its console line are expected, nothing else is.
    local = [url for url in failed if url.startswith(WEB)]
    external = [url for url in failed if not url.startswith(WEB)]
    other = [e for e in errors if not e.startswith("Failed to load resource")]
    if local or other or len(errors) > len(external):
        raise Failed(f"map page: failed requests {local[:3]}, console errors {errors[:3]}")
    log(
        f"map page in Chromium: {devices} device marker(s), basemap drawn, no errors"
        f" (offline: {len(external)} external tile request(s) failed, as expected)"
    )


def dump_logs(env: dict[str, str], layout: Layout) -> None:
    for stage in layout.stages:
        for service in stage:
            out = run(
                ["podman", "logs", "--tail", "15", container(service)],
                env=env,
                check=False,
                quiet=True,
            )
            print(
                f"--- {service} (last lines) ---\n{(out.stdout + out.stderr).strip()}",
                file=sys.stderr,
            )


def tear_down(tree: Path, env: dict[str, str], layout: Layout) -> None:
    run(
        [*layout.compose, "down", "-v"],
        cwd=tree,
        env=env,
        check=False,
        quiet=True,
    )
    # Whatever is left (an interrupted run, or down without the secrets it interpolates).
    for kind, listing in (
        ("container", ["podman", "ps", "-a", "--format", "{{.Names}}"]),
        ("pod", ["podman", "pod", "ls", "--format", "{{.Name}}"]),
        ("volume", ["podman", "volume", "ls", "--format", "{{.Name}}"]),
        ("network", ["podman", "network", "ls", "--format", "{{.Name}}"]),
    ):
        names = run(listing, env=env, check=False, quiet=True).stdout.split()
        for name in names:
            if PROJECT in name:
                rm = ["podman", kind, "rm", "-f", name]
                run(rm, env=env, check=False, quiet=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        type=Path,
        default=ROOT.parent / "shared" / "models",
        help="model files to seed the model volume with",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument("--build-only", action="store_true", help="build the images, no stack")
    parser.add_argument(
        "--no-standins",
        dest="standins",
        action="store_false",
        help="pull the real public base images instead of local stand-ins",
    )
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument(
        "--galera",
        action="store_true",
        help=f"layer {GALERA_FILE} over the main file (three nodes behind HAProxy) and"
        " SIGKILL the node taking writes",
    )
    args = parser.parse_args(argv)
    layout = GALERA if args.galera else PLAIN
    if not args.build_only and not (args.models / "yamnet_spectra_in.tflite").is_file():
        print(f"error: no models in {args.models} (--models DIR)", file=sys.stderr)
        return 2
    for tool in ("podman", "podman-compose", "debootstrap")[: 3 if args.standins else 2]:
        if shutil.which(tool) is None:
            print(
                f"error: {tool} not found: apt-get install podman buildah podman-compose "
                "runc debootstrap",
                file=sys.stderr,
            )
            return 2
    env = podman_env()
    timings: dict[str, float] = {}
    begin = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="earwitness-compose-")
    try:
        tree = Path(tmp) / "earwitness"
        copy_tree(tree)
        tear_down(tree, env, layout)  # a stack left by an interrupted run
        started = False
        try:
            build_images(tree, env, timings, args.standins)
            if args.build_only:
                log("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
                return 0
            secrets = make_secrets(tree, layout)
            env.update(secrets)  # as well as .env: the ${VAR:?} interpolation needs them
            seed_models(args.models.resolve(), env)
            started = True
            start_stack(tree, env, timings, layout)
            t = time.monotonic()
            for node in GALERA_NODES if layout is GALERA else (layout.sql_node,):
                check_server_settings(secrets, env, node)
            wait_for_data(secrets, env, layout.sql_node)
            token = check_api(env)
            check_map(token, args.artifacts)
            timings["data end to end"] = time.monotonic() - t
            if layout is GALERA:
                check_galera(tree, secrets, env, timings)
        except Exception as exc:  # every failure tears the stack down, then exits 1
            detail = exc if isinstance(exc, Failed) else repr(exc)
            print(f"compose-test FAILED: {detail}", file=sys.stderr)
            if started:
                dump_logs(env, layout)
            if not args.keep:
                tear_down(tree, env, layout)
            return 1
        if args.keep:
            log(f"stack left running (project {PROJECT}); its tree and secrets: {tree}")
        else:
            tear_down(tree, env, layout)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    timings["total"] = time.monotonic() - begin
    log("timings: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    log("compose-test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
