"""`RunResult`: what one finished training run reports, shared by the loop, reports and tables."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

__all__ = ["RunResult"]


@dataclass
class RunResult:
    """What a finished run reports (also written to `result.json` in its run directory)."""

    variant: str  # the run's name (e.g. the shuffle kind of a comparison)
    seed: int
    soft_acc: float
    frozen_acc: float
    params: int
    shuffle_params: int
    macs: int
    shuffle_macs: int
    time_per_epoch: float
    final_penalty: float | None  # sum of the structures' unweighted penalties (P(M)...)
    final_distance: float | None  # sum of their distances to their exact forms
    epochs: int
    out_dir: str
    soft_certified_acc: float | None = None  # at --certify's radius (None without it)
    frozen_certified_acc: float | None = None
    history: list[dict] = field(default_factory=list, repr=False)
    layers: list[dict] = field(default_factory=list, repr=False)
    model: nn.Module | None = field(default=None, repr=False)  # the trained soft model
