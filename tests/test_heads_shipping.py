"""Heads shipped to a running device by signed remote config, over the real broker: an
uploaded head (cloud registry in MariaDB) goes out inline or by URL (the real web app),
the agent hot-swaps it without a restart and reports it in status; a damaged, swapped or
wrong-model head is refused with the reason in status while the previous head keeps
running; a restart without network keeps the shipped head."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from earwitness.cloud.clipstore import FileClipStore
from earwitness.cloud.db.engine import make_engine, transaction
from earwitness.cloud.db.migrate import upgrade
from earwitness.cloud.db.repo import heads as head_repo
from earwitness.cloud.remote_config import head_ref
from earwitness.cloud.web.app import create_app
from earwitness.edge.agent import EdgeAgent
from earwitness.shared.heads import load_head
from tests.browser import serve
from tests.edge_helpers import ArraySource, Collector, edge_config, noise, signed_config
from tests.ingest_helpers import wait_for
from tests.services import mariadb_database, unique
from tests.web_helpers import web_settings

pytestmark = [pytest.mark.mqtt, pytest.mark.mariadb]


def _renamed(head_path: Path, tmp_path: Path, name: str, model_id: str | None = None) -> Path:
    """Another valid head file (a new name, or built for another model)."""
    head = load_head(head_path)
    head.name = name
    if model_id is not None:
        head.model_id = model_id
    out = tmp_path / f"{name}.json"
    head.save(out)
    return out


def _status_heads(collector: Collector) -> tuple[list[str] | None, str | None]:
    statuses = collector.statuses()
    last = statuses[-1] if statuses else {}
    return last.get("heads"), last.get("config_error")


def test_heads_go_to_a_running_device_and_bad_ones_never_replace_good_ones(
    distress_head: tuple[Path, Any], tmp_path: Path
) -> None:
    head_path, _split = distress_head
    first = load_head(head_path)
    second_path = _renamed(head_path, tmp_path, "distress_v2")
    second = load_head(second_path)
    wrong_model = _renamed(head_path, tmp_path, "other_model", "yamnet-float@000000000000")
    site = unique("s")
    cfg = edge_config(tmp_path, site, model={"heads": [str(head_path)]})
    topic = f"earwitness/v1/{site}/dev1/config"
    collector = Collector(site)
    agent = EdgeAgent(cfg, source=ArraySource(noise(600, 0.01), speed=20))
    agent.start()
    with mariadb_database() as url:
        engine = make_engine(url)
        upgrade(engine)
        with transaction(engine) as session:
            row, new = head_repo.add(session, second_path.read_bytes(), "test")
            assert new and row.head_id == second.head_id
            _same, again = head_repo.add(session, second_path.read_bytes(), "test")
            assert not again  # stored once by sha256
        app = create_app(web_settings(url, tmp_path / "clips"), engine, FileClipStore(tmp_path))
        try:
            wait_for(lambda: agent.publisher.connected, what="agent connected")
            wait_for(
                lambda: _status_heads(collector)[0] == [first.head_id], what="local head in status"
            )

            def refused(payload: bytes, reason: str) -> None:
                collector.publish(topic, payload, retain=True)
                wait_for(
                    lambda: reason in (_status_heads(collector)[1] or ""),
                    what=f"{reason}: {_status_heads(collector)}, {agent.config_error}",
                )
                assert agent.head_ids == [first.head_id]  # the running head stays

            blob = second_path.read_bytes()
            good = head_ref(blob)
            damaged = {**good, "artifact": base64.b64encode(blob[:-40] + b" " * 40).decode()}
            refused(signed_config(site, "dev1", 5, {"heads": [damaged]}), "is not the")
            swapped = {**good, "sha256": hashlib.sha256(b"other").hexdigest()}
            refused(signed_config(site, "dev1", 6, {"heads": [swapped]}), "is not the")
            refused(
                signed_config(site, "dev1", 7, {"heads": [head_ref(wrong_model.read_bytes())]}),
                "yamnet-float",
            )
            unreachable = {"sha256": good["sha256"], "url": "http://127.0.0.1:9/nope"}
            refused(signed_config(site, "dev1", 8, {"heads": [unreachable]}), "head http://")
            refused(
                signed_config(
                    site,
                    "dev1",
                    9,
                    {"heads": [], "detection": {"triggers": [{"custom": "scream"}]}},
                ),
                "custom class 'scream' is in no loaded head",
            )
            # By URL from the web app (no token: the sha256 is the key), then applied.
            windows = agent.windows
            with serve(app) as base:
                by_url = head_ref(blob, base)
                assert by_url["url"].startswith(base) and "artifact" not in by_url
                collector.publish(
                    topic, signed_config(site, "dev1", 10, {"heads": [by_url]}), retain=True
                )
                wait_for(
                    lambda: _status_heads(collector) == ([second.head_id], None),
                    what="shipped head in status",
                )
            assert agent.head_ids == [second.head_id]
            wait_for(lambda: agent.windows > windows + 10, what="the agent kept running")
            scores = [json.loads(p).get("custom") for _t, p in collector.of_kind("inference")[-5:]]
            assert all(s and set(s) == set(second.classes) for s in scores)
        finally:
            agent.stop()
        # A restart with the web app gone: the shipped head comes from the device's cache.
        restarted = EdgeAgent(cfg, source=ArraySource(noise(5, 0.01)))
        assert restarted.head_ids == [second.head_id] and restarted.config_error is None
        # Inline: the head travels inside the signed config.
        inline = head_ref(_renamed(head_path, tmp_path, "distress_v3").read_bytes())
        restarted.apply_remote_config(signed_config(site, "dev1", 11, {"heads": [inline]}))
        assert restarted.head_ids[0].startswith("distress_v3@")  # type: ignore[index]
        restarted.apply_remote_config(signed_config(site, "dev1", 12, {"heads": []}))
        assert restarted.head_ids is None  # [] runs no head
        engine.dispose()
    collector.publish(topic, b"", retain=True)
    collector.close()


def test_heads_upload_list_and_sign_from_the_command_line(
    distress_head: tuple[Path, Any], delta_head: tuple[Path, Any], tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    from earwitness.shared.signing import load_public_key, verify

    head_path, _split = distress_head
    env = {**os.environ, "EARWITNESS_DATABASE_URL": f"sqlite:///{tmp_path / 'cloud.db'}"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "earwitness", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )

    assert cli("db", "upgrade").returncode == 0
    up = cli("heads", "upload", str(head_path), "--by", "ops")
    assert up.returncode == 0 and up.stdout.startswith("uploaded: distress@"), up.stderr
    assert cli("heads", "upload", str(head_path)).stdout.startswith("already stored")
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "nope"}')
    refused = cli("heads", "upload", str(bad))
    assert refused.returncode != 0 and "not a head file" in refused.stderr
    listed = json.loads(cli("heads", "list", "--json").stdout)
    assert [h["classes"] for h in listed] == [["glass_break", "scream"]]
    sha = listed[0]["sha256"]
    assert sha == hashlib.sha256(head_path.read_bytes()).hexdigest()
    key = tmp_path / "config.key"
    public = cli("config", "keygen", "--key", str(key)).stdout.strip()
    for spec, url in ((sha[:12], None), ("distress", "https://cloud.example.org")):
        args = ["config", "sign", "site1/dev1", "--key", str(key), "--head", spec]
        signed = cli(*args, *(["--head-url", url] if url else []))
        assert signed.returncode == 0, signed.stderr
        runtime = verify(signed.stdout.strip().encode(), [load_public_key(public)]).runtime
        (ref,) = runtime["heads"]
        assert ref["sha256"] == sha
        if url:
            assert ref["url"] == f"{url}/api/v1/heads/{sha}/artifact"
        else:
            assert base64.b64decode(ref["artifact"]) == head_path.read_bytes()
    missing = cli("config", "sign", "site1/dev1", "--key", str(key), "--head", "nothing")
    assert missing.returncode != 0 and "earwitness heads list" in missing.stderr
    # A 96-unit delta head inline makes a config devices would refuse: refused here.
    big = cli("config", "sign", "site1/dev1", "--key", str(key), "--head", str(delta_head[0]))
    assert big.returncode != 0 and "--head-url" in big.stderr, big.stderr
    # Two heads, each small enough inline, make a config over what devices accept.
    two = cli("config", "sign", "site1/dev1", "--key", str(key), "--head", sha, "--head", sha)
    assert two.returncode != 0 and "devices refuse more than" in two.stderr, two.stderr
