"""Schedules of the learning rate (warm-up then cosine) and of the penalty weight (ramp)."""

from __future__ import annotations

import math

__all__ = ["PENALTY_SCHEDULES", "WarmupCosine", "penalty_weight_at"]

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


def penalty_weight_at(
    step: int, total_steps: int, weight: float, schedule: str = "linear", ramp: float = 0.5
) -> float:
    """lambda at `step`: "constant" is `weight` throughout; "linear" rises from 0 to `weight`
    over the first `ramp` fraction of training and stays there, so the network first learns
    with a free mixing and the matrices are pushed to permutations later.

    Raises:
        ValueError: unknown schedule or ramp outside [0, 1].
    """
    if schedule not in PENALTY_SCHEDULES:
        raise ValueError(f"schedule must be one of {PENALTY_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= ramp <= 1.0:
        raise ValueError(f"ramp must lie in [0, 1], got {ramp}")
    if schedule == "constant" or ramp == 0.0:
        return weight
    ramp_steps = ramp * max(1, total_steps)
    return weight * min(1.0, (step + 1) / ramp_steps)
