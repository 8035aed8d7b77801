"""`TrainConfig`: everything that defines one training run, with the CLI's defaults; it checks
itself when made."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..modules import StructureConfig, default_structures
from .errors import ConfigError
from .schedules import PENALTY_SCHEDULES

__all__ = ["AMP_MODES", "LATER_FIELDS", "LOSSES", "RUNTIME_FIELDS", "TrainConfig"]

# cross_entropy; hinge: the multi-class hinge loss with margin sqrt(2) * --certify (Li et al.).
LOSSES = ("cross_entropy", "hinge")

# --amp: off (float32), bf16 (autocast to bfloat16: CPU and CUDA), fp16 (autocast to float16 with
# a gradient scaler: CUDA only).
AMP_MODES = ("off", "bf16", "fp16")

# Fields that only say where and how fast a run goes: a resumed run may change them. Every other
# field shapes the saved state or the trajectory, so a checkpoint must agree on it.
RUNTIME_FIELDS = (
    "data_dir",
    "device",
    "workers",
    "progress",
    "stop_after_epochs",
    "channels_last",
    # A compiled step computes the same function; it only rounds in another order.
    "compile",
)
# Identity fields added after checkpoints were first written, with the value that an older
# checkpoint (which lacks them) trained with: it resumes when the run asks for that value.
LATER_FIELDS = {"amp": "off"}
# The seeds numpy's global generator takes (the training seeds it, and Python's and torch's).
MAX_SEED = 2**32 - 1


@dataclass
class TrainConfig:
    """One run. Each field is the flag of the same name (`lr`: `--lr`); `None` means the
    dataset's default (stem, size, flips, crop). `structures` are the configs the model is
    converted with (`asx.convert`); None: every registered structure at its flags' defaults
    (a learned shuffle). `variant` names the run (default: the structures' labels).

    Raises:
        ConfigError: values out of range (all problems in one message, naming the flags).
    """

    model: str = "shufflenet_v1_g3_x0_5"
    structures: tuple[StructureConfig, ...] | None = None
    variant: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    stem: str | None = None
    image_size: int | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.02
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    loss: str = "cross_entropy"
    certify: float | None = None
    penalty_schedule: str = "linear"
    penalty_start: float = 0.0
    penalty_ramp: float = 0.5
    flip: bool | None = None
    crop_padding: int | None = None
    seed: int = 0
    device: str = "auto"
    channels_last: bool = False
    amp: str = "off"
    compile: bool = False
    workers: int = 0
    limit_batches: int | None = None
    stop_after_epochs: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.structures is None:
            self.structures = default_structures()
        self.structures = tuple(self.structures)
        for i, config in enumerate(self.structures):
            if not isinstance(config, StructureConfig):
                raise ConfigError(
                    f"structures[{i}] must be a StructureConfig, got {type(config).__name__}"
                )
        if self.variant is None:
            labels = [c.label() for c in self.structures]
            self.variant = "+".join(label for label in labels if label) or "plain"
        problems = self.problems()
        if problems:
            raise ConfigError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is out of range, one sentence per flag."""
        problems = []
        for name in ("epochs", "batch_size", "limit_batches", "stop_after_epochs", "image_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{_flag(name)} must be >= 1, got {value}")
        for name in ("lr", "momentum", "weight_decay", "warmup_epochs"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:  # NaN fails too
                problems.append(f"{_flag(name)} must be >= 0 and finite, got {value}")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"--seed must lie in [0, {MAX_SEED}], got {self.seed}")
        if self.crop_padding is not None and self.crop_padding < 0:
            problems.append(f"--crop-padding must be >= 0 (0: off), got {self.crop_padding}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"--label-smoothing must lie in [0, 1), got {self.label_smoothing}")
        if self.loss not in LOSSES:
            problems.append(f"--loss must be one of {LOSSES}, got {self.loss!r}")
        if self.certify is not None and not 0 <= self.certify < math.inf:
            problems.append(f"--certify must be >= 0 and finite, got {self.certify}")
        if self.loss == "hinge" and self.certify is None:
            problems.append("--loss hinge needs --certify EPS (its margin is sqrt(2) * EPS)")
        if self.penalty_schedule not in PENALTY_SCHEDULES:
            problems.append(
                f"--penalty-schedule must be one of {PENALTY_SCHEDULES}, got "
                f"{self.penalty_schedule!r}"
            )
        if not 0 <= self.penalty_start <= self.penalty_ramp <= 1:
            problems.append(
                "--penalty-start and --penalty-ramp need 0 <= start <= ramp <= 1, got "
                f"{self.penalty_start} and {self.penalty_ramp}"
            )
        if self.amp not in AMP_MODES:
            problems.append(f"--amp must be one of {AMP_MODES}, got {self.amp!r}")
        elif self.amp == "fp16" and _cpu_device(self.device):
            problems.append(
                "--amp fp16 needs CUDA (float16 autocast with a gradient scaler); on the CPU use "
                "--amp bf16"
            )
        if self.workers < 0:
            problems.append(f"--workers must be >= 0, got {self.workers}")
        return problems

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        values["structures"] = [c.to_dict() for c in self.structures]
        return values

    def identity(self) -> dict:
        """The fields a resumed checkpoint must match (all but `RUNTIME_FIELDS`)."""
        values = {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
        values["structures"] = [c.identity() for c in self.structures]
        return values


def _cpu_device(name: str) -> bool:
    """Whether --device NAME trains on the CPU (auto: when CUDA is not available)."""
    if name == "auto":
        return not torch.cuda.is_available()
    return name.startswith("cpu")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
