from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ESC50, MODELS


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "earwitness", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "EARWITNESS_MODEL_DIR": str(MODELS), **(env or {})},
    )


def test_classify_directory_with_a_corrupt_file(tmp_path: Path) -> None:
    clips = sorted(ESC50.glob("*.flac"))[:2]
    for clip in clips:
        shutil.copy(clip, tmp_path / clip.name)
    (tmp_path / "broken.flac").write_bytes(b"fLaC" + b"\x00" * 64)
    proc = run("classify", str(tmp_path), "--json")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    by_name = {Path(f["path"]).name: f for f in out["files"]}
    assert "not a readable audio file" in by_name["broken.flac"]["error"]
    for clip in clips:
        result = by_name[clip.name]
        assert len(result["windows"]) == 10
        assert len(result["summary"]["mean"]) == 3
    assert "1 of 3 files failed" in proc.stderr


def test_classify_generated_siren_text_output() -> None:
    proc = run("classify", "--generate", "siren", "--windows")
    assert proc.returncode == 0, proc.stderr
    assert "mean: Siren" in proc.stdout


def test_classify_reports_missing_model_dir(tmp_path: Path) -> None:
    proc = run("classify", "--generate", "tone", "--model-dir", str(tmp_path / "none"))
    assert proc.returncode == 2
    assert "yamnet_spectra_in.tflite is missing" in proc.stderr


def test_eval_reaches_target_on_esc50() -> None:
    proc = run("eval", str(ESC50), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mean"]["clips"] == 256
    assert len(report["mean"]["per_class"]) == 50
    assert report["accuracy"] >= 0.70


def test_models_list_and_verify() -> None:
    proc = run("models", "list")
    assert proc.returncode == 0
    assert "yamnet-int8" in proc.stdout and "present" in proc.stdout
    proc = run("models", "verify", "yamnet-int8", "yamnet-waveform", "yamnet-class-map")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("bad", [["classify", "--top", "x"], ["nosuch"]])
def test_bad_arguments_exit_2(bad: list[str]) -> None:
    assert run(*bad).returncode == 2


def test_edge_exit_when_done_fails_when_messages_are_undelivered(tmp_path: Path) -> None:
    """A replay script must not believe delivery finished: no broker listens on the
    port, so after the drain timeout the agent exits 1 and says what is left where."""
    from tests.services import free_port

    src = tmp_path / "audio"
    src.mkdir()
    shutil.copy(next(ESC50.glob("*.flac")), src)
    outbox = tmp_path / "o.db"
    result = run(
        "edge",
        "--source",
        str(src),
        "--fast",
        "--site",
        "s1",
        "--device-id",
        "d1",
        "--outbox",
        str(outbox),
        "--mqtt-port",
        str(free_port()),
        "--health-port",
        "0",
        "--exit-when-done",
        "--drain-timeout",
        "1",
        "--model-dir",
        str(MODELS),
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "undelivered after --drain-timeout 1 s" in result.stderr
    assert str(outbox) in result.stderr


def test_db_upgrade_without_a_database_says_it_uses_the_default(tmp_path: Path) -> None:
    def db(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("EARWITNESS_")}
        return subprocess.run(
            [sys.executable, "-m", "earwitness", "db", "upgrade", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={**clean, **(env or {})},
        )

    implicit = db()
    assert implicit.returncode == 0, implicit.stderr
    assert "warning: no database given" in implicit.stderr
    assert "sqlite:///var/earwitness.db" in implicit.stderr and str(tmp_path) in implicit.stderr
    url = f"sqlite:///{tmp_path / 'chosen.db'}"
    for explicit in (db("--database-url", url), db(env={"EARWITNESS_DATABASE_URL": url})):
        assert explicit.returncode == 0 and "no database given" not in explicit.stderr


def test_misspelt_environment_variables_are_named(tmp_path: Path) -> None:
    from earwitness.cloud.settings import CloudSettings
    from earwitness.edge.config import EdgeSettings
    from earwitness.shared.config import unknown_environment

    url = f"sqlite:///{tmp_path / 'c.db'}"
    result = run("db", "upgrade", env={"EARWITNESS_DATABSE_URL": url})
    assert (
        "EARWITNESS_DATABSE_URL is not a setting and is ignored; did you mean"
        " EARWITNESS_DATABASE_URL?" in result.stderr
    )
    single = run("db", "current", "--database-url", url, env={"EARWITNESS_MQTT_HOST": "b"})
    assert "did you mean EARWITNESS_MQTT__HOST?" in single.stderr
    environ = {
        "EARWITNESS_DATABASE_URL": url,
        "EARWITNESS_MQTT__HOST": "broker",
        "EARWITNESS_INGST__GROUP": "g",  # typo
        "EARWITNESS_MODEL_DIR": "/models",  # read directly, not a setting
        "EARWITNESS_EDGE_DEVICE__ID": "d1",  # the edge's, not the cloud's
        "EARWITNESS_EDGE_DEVCE__ID": "d1",  # typo
        "EARWITNESS_EDGE_RUNTIME__DETECTION__MIN_WINDOWS": "2",
        "OTHER": "x",
    }
    assert unknown_environment(CloudSettings, environ) == ["EARWITNESS_INGST__GROUP"]
    assert unknown_environment(EdgeSettings, environ) == ["EARWITNESS_EDGE_DEVCE__ID"]


def test_edge_validate_config_checks_that_files_exist(tmp_path: Path) -> None:
    config = tmp_path / "edge.yaml"
    config.write_text(
        f"device: {{id: d1, site: s1}}\nsource: {{kind: file, path: {tmp_path / 'nope'}}}\n"
    )
    missing = run("edge", "--config", str(config), "--validate-config")
    assert missing.returncode == 2
    assert f"source.path: {tmp_path / 'nope'} does not exist" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) <= 2, missing.stderr
    (tmp_path / "nope").mkdir()
    shutil.copy(next(ESC50.glob("*.flac")), tmp_path / "nope")
    ok = run("edge", "--config", str(config), "--validate-config")
    assert ok.returncode == 0 and "configuration OK" in ok.stdout, ok.stderr


def test_no_delegate_banner_on_stderr() -> None:
    """Every command that loaded a model printed the TFLite runtime's INFO line."""
    clip = next(ESC50.glob("*.flac"))
    result = run("classify", str(clip))
    assert result.returncode == 0, result.stderr
    assert "XNNPACK" not in result.stderr and result.stderr.strip() == ""


@pytest.mark.parametrize(
    ("url", "first", "hint"),
    [
        ("mysql://root@127.0.0.1/test", "mysql:// needs the MySQLdb driver", "mysql+pymysql://"),
        (
            "mysql+pymysql://root@127.0.0.1/ew_no_such_db",
            "Unknown database 'ew_no_such_db'",
            "CREATE DATABASE",
        ),
        (
            "mysql+pymysql://root:wrong-password@127.0.0.1/test",
            "root:***@127.0.0.1/test: Access denied",
            "check the user and password",
        ),
        (
            "mysql+pymysql://root@127.0.0.1:1/test",
            "Can't connect to MySQL server",
            "is the server running",
        ),
        ("not a url", "database URL 'not a url' cannot be parsed", "mysql+pymysql://USER"),
    ],
    ids=["mysql-without-driver", "unknown-database", "wrong-password", "refused", "unparseable"],
)
def test_database_errors_are_two_lines_without_traceback(url: str, first: str, hint: str) -> None:
    from tests.services import require

    require("127.0.0.1", 3306, "MariaDB")
    for command in (("db", "upgrade"), ("db", "current"), ("tokens", "create", "probe")):
        result = run(*command, "--database-url", url)
        lines = [line for line in result.stderr.splitlines() if " INFO " not in line]
        assert result.returncode == 1, (command, result.stderr[-1500:])
        assert "Traceback" not in result.stderr, (command, result.stderr[-1500:])
        assert len(lines) == 2 and first in lines[0] and hint in lines[1], (command, lines)
        assert "wrong-password" not in result.stderr  # the password is never printed


def test_a_second_token_with_a_taken_name_is_refused_in_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert run("db", "upgrade", "--database-url", url).returncode == 0
    first = run("tokens", "create", "ops", "--database-url", url)
    assert first.returncode == 0 and first.stdout.startswith("ew_"), first.stderr
    again = run("tokens", "create", "ops", "--database-url", url)
    assert again.returncode == 1 and again.stdout == ""
    assert "Traceback" not in again.stderr
    assert again.stderr.strip() == (
        "error: a token named 'ops' exists (revoked or not): choose another name"
    ), again.stderr


@pytest.mark.parametrize("service", ["second-opinion", "alerts"])
def test_services_without_a_port_of_their_own_serve_healthz(service: str, tmp_path: Path) -> None:
    import signal
    import time
    import urllib.request

    from tests.services import free_port

    url = f"sqlite:///{tmp_path / 'c.db'}"
    assert run("db", "upgrade", "--database-url", url).returncode == 0
    config = tmp_path / "cloud.yaml"
    config.write_text(
        "alerts:\n  mqtt: false\n  rules:\n"
        "    - {name: gunshot, any_of: [{label: 'Gunshot, gunfire'}]}\n"
    )
    port = free_port()
    args = ["--backends", "yamnet-reference", "--model-dir", str(MODELS)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "earwitness", service, "--database-url", url]
        + ["--config", str(config), "--health-port", str(port)]
        + (args if service == "second-opinion" else []),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "EARWITNESS_MODEL_DIR": str(MODELS)},
    )
    try:
        deadline = time.monotonic() + 60
        body = None
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    body = json.loads(r.read())
            except OSError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.3)
        assert body is not None and body["ok"] is True, body
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
