"""Schedules of the learning rate (warm-up then cosine) and of the penalties (a ramp of
the factor that scales each structure's own weight)."""

from __future__ import annotations

import math

__all__ = ["PENALTY_SCHEDULES", "WarmupCosine", "penalty_scale_at"]

PENALTY_SCHEDULES = ("linear", "constant")


class WarmupCosine:
    """LR factor per step for `torch.optim.lr_scheduler.LambdaLR`: a linear warm-up from
    1/warmup_steps to 1 over `warmup_steps`, then a cosine decay to 0 at `total_steps`.

    A class, not a lambda, so that the scheduler's state_dict pickles with the checkpoint.
    """

    def __init__(self, total_steps: int, warmup_steps: int) -> None:
        self.total_steps = max(1, total_steps)
        self.warmup_steps = max(0, min(warmup_steps, self.total_steps))

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        return 0.5 * (1.0 + math.cos(math.pi * progress))


def penalty_scale_at(
    step: int,
    total_steps: int,
    schedule: str = "linear",
    start: float = 0.0,
    end: float = 0.5,
) -> float:
    """The factor in [0, 1] that scales every structure's penalty (its own lambda) at `step`.

    "constant" is 1 throughout; "linear" is 0 until the `start` fraction of training, rises
    linearly to 1 at the `end` fraction and stays there, so the network first learns with a free
    mixing and the matrices are pushed to permutations later.

    Raises:
        ValueError: unknown schedule, or not 0 <= start <= end <= 1.
    """
    if schedule not in PENALTY_SCHEDULES:
        raise ValueError(f"schedule must be one of {PENALTY_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= start <= end <= 1.0:
        raise ValueError(f"the ramp needs 0 <= start <= end <= 1, got start {start}, end {end}")
    if schedule == "constant" or end == 0.0:
        return 1.0
    total = max(1, total_steps)
    position = (step + 1) / total
    if position <= start:
        return 0.0
    if end == start:
        return 1.0
    return min(1.0, (position - start) / (end - start))
