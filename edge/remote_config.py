"""Which remote configs the agent accepts.

Only a config that a key from the *local* configuration signed, that names this device and
whose version is strictly higher than the one in force; with ``pin_privacy`` also none that
would weaken the local privacy settings. The last accepted config is kept beside the
outbox, so a restart (even offline) keeps it and an older one cannot be replayed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pydantic import ValidationError

from earwitness.edge.config import PrivacySettings, RemoteConfigSettings, RuntimeSettings
from earwitness.shared.config import format_errors
from earwitness.shared.errors import ConfigError
from earwitness.shared.signing import load_public_key, verify

log = logging.getLogger(__name__)


def weakens(new: PrivacySettings, local: PrivacySettings) -> str | None:
    """Why ``new`` lets out more than ``local`` does, or None."""
    if local.enabled and not new.enabled:
        return "privacy.enabled false"
    if local.enabled and new.speech_threshold > local.speech_threshold:
        return (
            f"privacy.speech_threshold {new.speech_threshold} above the local"
            f" {local.speech_threshold}"
        )
    return None


class RemoteConfigGate:
    def __init__(
        self,
        settings: RemoteConfigSettings,
        site: str,
        device: str,
        local: RuntimeSettings,
        state_path: Path | None,
    ) -> None:
        self.keys = [load_public_key(k) for k in settings.public_keys]
        self.pin_privacy = settings.pin_privacy
        self.site, self.device = site, device
        self.local = local
        self.state_path = state_path

    def check(self, payload: bytes, in_force: int) -> RuntimeSettings:
        """The runtime settings in ``payload`` if acceptable now, else ConfigError why not."""
        signed = verify(payload, self.keys)
        if (signed.site, signed.device) != (self.site, self.device):
            raise ConfigError(
                f"remote config refused: it is for {signed.site}/{signed.device},"
                f" not {self.site}/{self.device}"
            )
        if signed.version <= in_force:
            raise ConfigError(
                f"remote config refused: version {signed.version} is not newer than the"
                f" version in force ({in_force}); a replay?"
            )
        try:
            runtime = RuntimeSettings.model_validate({**signed.runtime, "version": signed.version})
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, "remote config")) from exc
        if self.pin_privacy:
            why = weakens(runtime.privacy, self.local.privacy)
            if why:
                raise ConfigError(f"remote config refused: privacy is pinned locally ({why})")
        return runtime

    def remember(self, payload: bytes) -> None:
        """Keep the accepted config (atomically) for the next start."""
        if self.state_path is None:
            return
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, self.state_path)

    def recall(self) -> tuple[bytes, RuntimeSettings] | None:
        """The config accepted before the last restart, if it still verifies."""
        if self.state_path is None or not self.state_path.is_file():
            return None
        payload = self.state_path.read_bytes()
        try:
            return payload, self.check(payload, self.local.version)
        except ConfigError as exc:
            log.warning("stored remote config %s ignored: %s", self.state_path, exc)
            return None
