"""The errors the training program reports to its user as one clear line and an exit code."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "NonFiniteLossError", "TrainingError"]


class TrainingError(Exception):
    """A problem the user can act on; the CLI prints its message and exits with `exit_code`."""

    exit_code = 2


class ConfigError(TrainingError):
    """Flags that do not fit together (unknown model, bad values, run directory in use)."""


class DataError(TrainingError):
    """A data folder that is missing, incomplete or malformed."""


class CheckpointError(TrainingError):
    """A checkpoint that cannot be read or belongs to another run configuration."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept as it was."""

    exit_code = 1
