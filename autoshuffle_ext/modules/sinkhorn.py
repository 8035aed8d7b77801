"""`SinkhornShuffle`: the convex-relaxation baseline (doubly stochastic, no penalty).

M = Sinkhorn(logits / temperature), computed in log space by alternating row and column
normalisations; it is doubly stochastic by construction and trained without any penalty, which
is the relaxation AutoShuffleNet shows to stall away from permutations. Rounded like
`LearnedShuffle` by `freeze`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..ops.mixing import shuffle_mix
from .hard import check_channels
from .init import DEFAULT_BLEND, initial_matrix
from .soft import SoftShuffle

__all__ = ["SinkhornShuffle", "sinkhorn"]


def sinkhorn(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """exp of `logits` after `iters` rounds of log-space row then column normalisation."""
    log_m = logits
    for _ in range(iters):
        log_m = log_m - torch.logsumexp(log_m, dim=-1, keepdim=True)
        log_m = log_m - torch.logsumexp(log_m, dim=-2, keepdim=True)
    return log_m.exp()


class SinkhornShuffle(SoftShuffle):
    """Channel shuffle mixing with M = Sinkhorn(logits / temperature) [C, C].

    Args:
        num_channels, groups, init, blend, noise, generator: as for `LearnedShuffle`; the logits
            start at temperature * log(initial matrix), so M starts where LearnedShuffle's does.
        temperature: divides the logits; lower is sharper.
        iters: Sinkhorn iterations per forward pass.

    It has no penalty and no projection (M is doubly stochastic by construction); `freeze`
    rounds it like a `LearnedShuffle`.

    Raises:
        TypeError: num_channels or groups not an int.
        ValueError: bad shape, a temperature that is not finite and > 0, iters < 1, or bad
            init arguments (see `initial_matrix`).
    """

    def __init__(
        self,
        num_channels: int,
        groups: int | None = None,
        init: str | torch.Tensor = "shuffle",
        *,
        temperature: float = 1.0,
        iters: int = 10,
        blend: float = DEFAULT_BLEND,
        noise: float = 1e-2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_channels, groups, init if isinstance(init, torch.Tensor) else None)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be > 0 and finite, got {temperature}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        self.temperature = float(temperature)
        self.iters = iters
        start = initial_matrix(
            num_channels, groups, init, blend=blend, noise=noise, generator=generator
        )
        self.logits = nn.Parameter(temperature * start.clamp_min(1e-6).log())

    def matrix(self) -> torch.Tensor:
        """The current doubly stochastic M [C, C]."""
        return sinkhorn(self.logits / self.temperature, self.iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_channels, type(self).__name__)
        y, _ = shuffle_mix(x, self.matrix())
        return y

    def extra_repr(self) -> str:
        return (
            f"num_channels={self.num_channels}, groups={self.groups}, "
            f"temperature={self.temperature}, iters={self.iters}"
        )
