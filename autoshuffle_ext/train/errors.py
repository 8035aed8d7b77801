"""The errors the training program reports to its user as one clear line and an exit code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "NonFiniteLossError",
    "TrainingError",
    "naming_file",
]


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


@contextmanager
def naming_file(path: str | PathLike) -> Iterator[None]:
    """Writes inside this block that fail with an OSError naming no file (a full disk: "No space
    left on device" from a write, a flush or fsync) re-raise it with `path` as its filename, so
    that the CLI's one line says which file could not be written."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or error.errno is None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
