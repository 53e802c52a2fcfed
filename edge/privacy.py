"""Privacy: no clip with speech in it leaves the device, or touches its disk."""

from __future__ import annotations

from dataclasses import dataclass

from earwitness.edge.config import PrivacySettings


@dataclass
class PrivacyFilter:
    settings: PrivacySettings
    blocked: int = 0
    allowed: int = 0

    def allows(self, max_speech_score: float) -> bool:
        """Decide on the highest speech-group score of every window the clip overlaps."""
        if self.settings.enabled and max_speech_score > self.settings.speech_threshold:
            self.blocked += 1
            return False
        self.allowed += 1
        return True
