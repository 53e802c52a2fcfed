"""Exceptions whose messages are meant for the person running the command."""

from __future__ import annotations

# Exit codes every subcommand uses, so scripts and systemd can tell the cases apart.
EXIT_OK = 0
EXIT_FAILED = 1  # some input failed or work was left undone; the rest was processed
EXIT_USAGE = 2  # bad arguments or configuration: nothing was done


class EarwitnessError(Exception):
    """Base class: an error a user can act on, with a message that says what and where."""


class AudioError(EarwitnessError):
    """Audio that cannot be used: missing, not audio, empty, non-finite samples."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class ModelError(EarwitnessError):
    """A model file that is missing, corrupt or cannot be loaded."""


class ConfigError(EarwitnessError):
    """A configuration file or setting that is invalid."""
