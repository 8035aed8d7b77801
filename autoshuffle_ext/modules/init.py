"""Starting points of a learned mixing matrix, all doubly stochastic."""

from __future__ import annotations

import torch

from ..doubly_stochastic import permutation_matrix, project_doubly_stochastic_
from ..ops.channel_gather import check_permutation, fixed_shuffle_perm

__all__ = ["DEFAULT_BLEND", "INITS", "initial_matrix"]

INITS = ("shuffle", "identity", "random", "uniform")
# Weight of the uniform matrix in the permutation starts. A stronger prior (0.5, 0.9) is where the
# penalty takes every matrix back to (bench/RESULTS.md, learned-shuffle study).
DEFAULT_BLEND = 0.99


def initial_matrix(
    num_channels: int,
    groups: int | None = None,
    init: str | torch.Tensor = "shuffle",
    *,
    blend: float = DEFAULT_BLEND,
    noise: float = 1e-2,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A [C, C] doubly stochastic matrix to start learning from.

    init:
        "shuffle": ShuffleNet's fixed permutation for `groups`, blended toward the uniform matrix
            (`(1 - blend) * P + blend / C`), so learning starts from the hand design but can move.
        "identity": the identity, blended the same way.
        "random": a random permutation (drawn from `generator`), blended the same way.
        "uniform": the uniform matrix 1/C (plus the noise).
        a perm (1-D int64 tensor of C entries, `out[:, c] = x[:, perm[c]]`): that permutation,
            blended the same way (a converted network's shuffle starts from the one it had).
    noise: relative multiplicative noise that breaks the symmetry between channels; the result is
        projected back onto the doubly stochastic matrices.

    Raises:
        TypeError, ValueError: an init perm that is not a permutation of num_channels (see
            `check_permutation`).
        ValueError: unknown init, num_channels < 1, blend outside [0, 1], noise < 0 or infinite, or
            init="shuffle" without a groups that divides num_channels.
    """
    if isinstance(init, torch.Tensor):
        check_permutation(init, num_channels, name="init")
    elif init not in INITS:
        raise ValueError(f"init must be one of {INITS} or a perm tensor, got {init!r}")
    if num_channels < 1:
        raise ValueError(f"num_channels must be >= 1, got {num_channels}")
    if not 0.0 <= blend <= 1.0:  # also False for NaN
        raise ValueError(f"blend must lie in [0, 1], got {blend}")
    if not noise >= 0 or noise == float("inf"):
        raise ValueError(f"noise must be finite and >= 0, got {noise}")
    uniform = torch.full((num_channels, num_channels), 1.0 / num_channels, dtype=torch.float64)
    if init == "uniform":
        M = uniform
    else:
        if isinstance(init, torch.Tensor):
            perm = init.detach().cpu()
        elif init == "shuffle":
            if groups is None:
                raise ValueError("init='shuffle' needs groups (the fixed shuffle's group count)")
            perm = fixed_shuffle_perm(num_channels, groups)
        elif init == "random":
            perm = torch.randperm(num_channels, generator=generator)
        else:
            perm = torch.arange(num_channels)
        M = (1 - blend) * permutation_matrix(perm, torch.float64) + blend * uniform
    if noise > 0:
        M = M * (1 + noise * torch.rand(M.shape, generator=generator, dtype=torch.float64))
    return project_doubly_stochastic_(M).to(dtype)
