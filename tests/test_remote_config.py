"""Signed remote config: the signature, the device's gate, and the operator's commands
(`earwitness config keygen|sign|push`) against the real Mosquitto."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from earwitness.edge.config import RemoteConfigSettings, RuntimeSettings
from earwitness.edge.remote_config import RemoteConfigGate
from earwitness.shared.errors import ConfigError
from earwitness.shared.signing import load_public_key, public_key_text, sign, verify
from tests.services import MQTT_HOST, MQTT_PORT, require, unique

KEY = Ed25519PrivateKey.generate()
PUBLIC = public_key_text(KEY.public_key())


def _gate(tmp_path: Path, pin: bool = False) -> RemoteConfigGate:
    return RemoteConfigGate(
        RemoteConfigSettings(public_keys=[PUBLIC], pin_privacy=pin),
        "site1",
        "dev1",
        RuntimeSettings(),
        tmp_path / "outbox.db.config",
    )


def test_a_changed_byte_breaks_the_signature() -> None:
    payload = json.loads(sign(KEY, "site1", "dev1", 5, {"privacy": {"enabled": True}}))
    body = base64.b64decode(payload["signed"]).replace(b'"enabled":true', b'"enabled":false')
    payload["signed"] = base64.b64encode(body).decode()
    with pytest.raises(ConfigError, match="does not verify"):
        verify(json.dumps(payload).encode(), [load_public_key(PUBLIC)])


def test_gate_refuses_what_it_must_and_remembers_what_it_took(tmp_path: Path) -> None:
    gate = _gate(tmp_path, pin=True)
    with pytest.raises(ConfigError, match="no signing key configured"):
        RemoteConfigGate(RemoteConfigSettings(), "s", "d", RuntimeSettings(), None).check(
            sign(KEY, "s", "d", 1, {}), 0
        )
    with pytest.raises(ConfigError, match="not signed"):
        gate.check(b'{"version": 5}', 0)
    with pytest.raises(ConfigError, match="not newer"):
        gate.check(sign(KEY, "site1", "dev1", 4, {}), 4)
    with pytest.raises(ConfigError, match="privacy is pinned"):
        gate.check(sign(KEY, "site1", "dev1", 5, {"privacy": {"enabled": False}}), 0)
    stronger = sign(KEY, "site1", "dev1", 6, {"privacy": {"speech_threshold": 0.1}})
    assert gate.check(stronger, 0).privacy.speech_threshold == 0.1  # stricter is fine
    gate.remember(stronger)
    assert stat.S_IMODE(os.stat(tmp_path / "outbox.db.config").st_mode) & 0o002 == 0
    recalled = _gate(tmp_path, pin=True).recall()
    assert recalled is not None and recalled[1].version == 6
    # A stored config that no configured key verifies is ignored, not applied.
    other = RemoteConfigGate(
        RemoteConfigSettings(
            public_keys=[public_key_text(Ed25519PrivateKey.generate().public_key())]
        ),
        "site1",
        "dev1",
        RuntimeSettings(),
        tmp_path / "outbox.db.config",
    )
    assert other.recall() is None


def test_a_bad_public_key_in_the_local_config_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="Ed25519 public key"):
        RemoteConfigSettings(public_keys=["not-a-key"])


@pytest.mark.mqtt
def test_keygen_sign_and_push_through_the_real_broker(tmp_path: Path) -> None:
    require(MQTT_HOST, MQTT_PORT, "Mosquitto")
    key = tmp_path / "keys" / "config.key"
    env = {
        **os.environ,
        "EARWITNESS_MQTT__HOST": MQTT_HOST,
        "EARWITNESS_MQTT__PORT": str(MQTT_PORT),
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "earwitness", "config", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

    made = cli("keygen", "--key", str(key))
    assert made.returncode == 0, made.stderr
    public = made.stdout.strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert cli("keygen", "--key", str(key)).returncode != 0  # never overwrites a key
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text("publish:\n  inferense: none\n")
    typo = cli("push", "site1/dev1", "--key", str(key), "--file", str(runtime))
    assert typo.returncode == 2 and "inferense" in typo.stderr and "line 2" in typo.stderr
    runtime.write_text("publish:\n  inference: none\n")
    site = unique("cfg")
    got: list[bytes] = []
    arrived = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("sub"), protocol=paho.MQTTv5)

    def on_message(_c: object, _u: object, msg: paho.MQTTMessage) -> None:
        if msg.payload:
            got.append(bytes(msg.payload))
            arrived.set()

    sub.on_message = on_message
    sub.connect(MQTT_HOST, MQTT_PORT)
    sub.loop_start()
    try:
        pushed = cli("push", f"{site}/dev1", "--key", str(key), "--file", str(runtime))
        assert pushed.returncode == 0, pushed.stderr
        sub.subscribe(f"earwitness/v1/{site}/dev1/config", qos=1)  # after: it is retained
        assert arrived.wait(10)
        signed = verify(got[0], [load_public_key(public)])
        assert (signed.site, signed.device) == (site, "dev1")
        assert signed.runtime == {"publish": {"inference": "none"}}
    finally:
        sub.publish(f"earwitness/v1/{site}/dev1/config", b"", qos=1, retain=True).wait_for_publish(
            5
        )
        sub.loop_stop()
        sub.disconnect()
