"""`LearnedShuffle`: a channel shuffle whose permutation is learned (AutoShuffleNet).

Training mixes the channels with a doubly stochastic matrix M, `y[:, i] = sum_j M[i, j] x[:, j]`,
and the loss adds `penalty_weight * P(M)`, the exact l1-l2 penalty that vanishes exactly on
permutations. An optimizer hook (`attach_projection`) keeps M doubly stochastic after each step;
`freeze` rounds M to an exact permutation, served by a `HardShuffle` gather.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..doubly_stochastic import DEFAULT_SCALING_ITERS, project_doubly_stochastic_
from ..ops.mixing import shuffle_mix
from ..ops.penalty import l1l2_penalty
from ..ops.sparse_mix import sparse_mix, sparse_mix_index
from .hard import check_channels
from .init import DEFAULT_BLEND, initial_matrix
from .soft import SoftShuffle

__all__ = ["DEFAULT_PENALTY_WEIGHT", "DEFAULT_SPARSE_BELOW", "LearnedShuffle"]

# lambda of P(M); the training program's --penalty-weight sets it (and only ramps it).
DEFAULT_PENALTY_WEIGHT = 0.5
# The sparse mixing serves M once every row and column has at most this fraction of non-zeros:
# below it the gathered multiply-adds beat the dense GEMMs (bench/RESULTS.md, the crossover).
DEFAULT_SPARSE_BELOW = 0.125


class LearnedShuffle(SoftShuffle):
    """Drop-in channel shuffle with a learned doubly stochastic mixing matrix `weight` [C, C].

    Args:
        num_channels: C, the size of dim 1 of the input.
        groups: the group count of the shuffle it replaces (needed by init="shuffle" and by the
            report of channels moved versus the fixed shuffle).
        init: "shuffle" (default: the fixed shuffle blended toward uniform), "identity",
            "random", "uniform", or a perm tensor to start from (blended the same way; the
            report's "moved" then counts against it); see `initial_matrix`.
        penalty_weight: lambda, the factor of P(M) in `penalty()`.
        projection_iters: column/row scaling rounds of `project_` (then a short polish).
        sparse_below: the sparse mixing (`sparse_mix`) serves M whenever each of its rows and
            columns has at most `sparse_below * C` non-zeros (0: always the dense op).
        blend, noise, generator: passed to `initial_matrix`.

    The forward pass runs the fused mixing op, which also returns P(M); `penalty()` reuses that
    value while M is unchanged, so the penalty's gradient joins the mixing backward in one pass.
    Once the projection has made M sparse enough, the forward runs `sparse_mix` instead: the
    product and the input gradient through M's non-zeros, the gradient of M still dense. Both
    paths give the same values up to the order of float additions (under autocast the sparse
    path multiplies by the float32 M, the dense one by M rounded to the activation's dtype: they
    then differ by about one unit in the last place). Under torch.compile the dense op always
    serves (the sparse form's width depends on M's values).

    Raises:
        TypeError: num_channels or groups not an int.
        ValueError: bad shape, a penalty_weight that is negative or not finite, a negative
            projection_iters, a sparse_below outside [0, 1], or bad init arguments (see
            `initial_matrix`).
    """

    def __init__(
        self,
        num_channels: int,
        groups: int | None = None,
        init: str | torch.Tensor = "shuffle",
        penalty_weight: float = DEFAULT_PENALTY_WEIGHT,
        *,
        projection_iters: int = DEFAULT_SCALING_ITERS,
        sparse_below: float = DEFAULT_SPARSE_BELOW,
        blend: float = DEFAULT_BLEND,
        noise: float = 1e-2,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(num_channels, groups, init if isinstance(init, torch.Tensor) else None)
        if not (math.isfinite(penalty_weight) and penalty_weight >= 0):
            raise ValueError(f"penalty_weight must be >= 0 and finite, got {penalty_weight}")
        if projection_iters < 0:
            raise ValueError(f"projection_iters must be >= 0, got {projection_iters}")
        if not 0 <= sparse_below <= 1:
            raise ValueError(f"sparse_below must lie in [0, 1], got {sparse_below}")
        self.penalty_weight = float(penalty_weight)
        self.projection_iters = projection_iters
        self.sparse_below = float(sparse_below)
        self.reset_sparse_index()
        matrix = initial_matrix(
            num_channels, groups, init, blend=blend, noise=noise, generator=generator
        )
        self.weight = nn.Parameter(matrix)

    def matrix(self) -> torch.Tensor:
        return self.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_channels(x, self.num_channels, type(self).__name__)
        index = self.sparse_index()
        if index is None:
            y, p = shuffle_mix(x, self.weight)
        else:
            y, p = sparse_mix(x, self.weight, *index)
        self.remember_penalty(p)  # `penalty()` reuses it while M is unchanged
        return y

    def sparse_index(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows, cols) of `sparse_mix` when M is sparse enough for it (see `sparse_below`),
        else None. Taken again only when M has changed (its version counter, address, dtype or
        device), i.e. once per optimizer step: one count of M's non-zeros per row and column
        (on CUDA one host sync), and the lists only when they will serve. A write through
        `weight.data` bumps no version: call `reset_sparse_index()` after one."""
        if self.sparse_below == 0 or torch.compiler.is_compiling():
            return None
        w = self.weight
        key = (w.data_ptr(), w._version, w.dtype, w.device)
        if key != self._sparse_key:
            # Normal tensors even under inference_mode: a training step may reuse them.
            with torch.inference_mode(False), torch.no_grad():
                nonzero = w != 0
                widest = torch.stack([nonzero.sum(0).max(), nonzero.sum(1).max()]).max()
                sparse = int(widest) <= self.sparse_below * self.num_channels
                self._sparse_index = sparse_mix_index(w) if sparse else None
            self._sparse_key = key
        return self._sparse_index

    def reset_sparse_index(self) -> None:
        """Forgets the sparse form of M (`sparse_index` takes it again on the next call)."""
        self._sparse_key = None
        self._sparse_index = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_sparse_key": None, "_sparse_index": None}

    def _apply(self, fn, recurse: bool = True):
        self.reset_sparse_index()  # .to(), .half(): new values, perhaps the same address
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.reset_sparse_index()
        super()._load_from_state_dict(*args, **kwargs)

    def raw_penalty(self) -> torch.Tensor:
        """P(M) (0-d), differentiable in M."""
        return l1l2_penalty(self.weight)

    @torch.no_grad()
    def project_(self) -> None:
        """Brings M back to doubly stochastic, in place (`project_doubly_stochastic_`)."""
        project_doubly_stochastic_(self.weight, self.projection_iters)

    @classmethod
    @torch.no_grad()
    def project_all_(cls, modules: Iterable[LearnedShuffle]) -> None:
        """Projects matrices of one size, dtype, device and round count as one [B, n, n] stack:
        the projection is many small passes, so a stack pays the per-op overhead once."""
        buckets: dict[tuple, list[LearnedShuffle]] = {}
        for m in modules:
            w = m.weight
            buckets.setdefault((w.shape[0], w.dtype, w.device, m.projection_iters), []).append(m)
        for (*_, iters), bucket in buckets.items():
            if len(bucket) == 1:
                bucket[0].project_()
                continue
            stack = torch.stack([m.weight for m in bucket])
            project_doubly_stochastic_(stack, iters)
            for m, projected in zip(bucket, stack, strict=True):
                m.weight.copy_(projected)

    def extra_repr(self) -> str:
        return (
            f"num_channels={self.num_channels}, groups={self.groups}, "
            f"penalty_weight={self.penalty_weight}, sparse_below={self.sparse_below}"
        )
