"""The training program: data, loop, checkpoints, reports and the `autoshuffle-train` CLI."""

from .config import TrainConfig
from .errors import CheckpointError, ConfigError, DataError, NonFiniteLossError, TrainingError
from .loop import run_training
from .result import RunResult

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataError",
    "NonFiniteLossError",
    "RunResult",
    "TrainConfig",
    "TrainingError",
    "run_training",
]
