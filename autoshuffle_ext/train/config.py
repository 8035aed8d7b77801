"""`TrainConfig`: everything that defines one training run, with the CLI's defaults."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..modules.dgconv import DEFAULT_BUDGET_WEIGHT, DEFAULT_GATE_INIT
from ..modules.init import DEFAULT_BLEND

__all__ = ["RUNTIME_FIELDS", "TrainConfig"]

# Fields that only say where and how fast a run goes: a resumed run may change them. Every other
# field shapes the saved state or the trajectory, so a checkpoint must agree on it.
RUNTIME_FIELDS = (
    "data_dir",
    "device",
    "workers",
    "progress",
    "stop_after_epochs",
    "channels_last",
)


@dataclass
class TrainConfig:
    """One run. Defaults are the CLI's; `None` means the dataset's default (stem, size, flips)."""

    model: str = "shufflenet_v1_g3_x0_5"
    shuffle: str = "learned"
    groups: str = "fixed"
    budget: float | None = None
    budget_weight: float = DEFAULT_BUDGET_WEIGHT
    gate_init: float = DEFAULT_GATE_INIT
    dataset: str = "digits"
    data_dir: str | None = None
    stem: str | None = None
    image_size: int | None = None
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.02
    shuffle_lr: float | None = None
    gate_lr: float | None = None
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.0
    penalty_weight: float = 0.5
    shuffle_init: str = "shuffle"
    shuffle_blend: float = DEFAULT_BLEND
    penalty_schedule: str = "linear"
    penalty_start: float = 0.0
    penalty_ramp: float = 0.5
    projection_iters: int = 10
    flip: bool | None = None
    crop_padding: int | None = None
    seed: int = 0
    device: str = "auto"
    channels_last: bool = False
    workers: int = 0
    limit_batches: int | None = None
    stop_after_epochs: int | None = None
    progress: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> dict:
        """The fields a resumed checkpoint must match (all but `RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUNTIME_FIELDS}
