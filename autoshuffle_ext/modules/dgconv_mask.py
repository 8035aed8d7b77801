"""The channel-group structure of a `DGConv2d` (Zhang et al., ICCV 2019), for any channel count.

C = gcd(in_channels, out_channels) is written as a product of primes n_1 ... n_K (the gate
sizes, `factors`); a block index a in [0, C) has mixed-radix digits d_k(a), d_1 the most
significant. With gates g_k in {0, 1} the relationship matrix is

    U = U_1 (x) U_2 (x) ... (x) U_K,   U_k = g_k * ones(n_k, n_k) + (1 - g_k) * I_{n_k},
    i.e. U[a, b] = prod_k (g_k or d_k(a) == d_k(b)),

and the conv's mask is mask[o, i] = U[o // (out / C), i // (in / C)]. For C = 2^K this is the
paper's construction. Blocks a and b are connected iff their digits agree at every closed gate
(g_k = 0), so the layer has G = prod_{closed k} n_k groups (any divisor of C is reachable);
ordered by those digits first, the mask is block diagonal: the layer is a grouped conv between two
channel permutations (`group_plan`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "GroupPlan",
    "cost_fraction",
    "expand_blocks",
    "gate_factors",
    "group_plan",
    "num_groups",
    "prime_factors",
    "radix_digits",
    "relationship_matrix",
]


def prime_factors(n: int) -> tuple[int, ...]:
    """The prime factors of n >= 1 in ascending order, with multiplicity (() for 1).

    Raises:
        ValueError: n < 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    factors: list[int] = []
    p = 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    if n > 1:
        factors.append(n)
    return tuple(factors)


def gate_factors(in_channels: int, out_channels: int, leading_groups: int = 1) -> tuple[int, ...]:
    """The gate sizes n_k of a layer: the prime factors of C = gcd(in_channels, out_channels),
    those of `leading_groups` first (as the most significant digits) and the rest after, each
    part ascending.

    Leading with a group count G makes "the gates of G closed" the ordinary contiguous grouped
    conv (identity permutations); for a power of two the order is the paper's whatever G is.

    Raises:
        ValueError: leading_groups does not divide C.
    """
    blocks = math.gcd(in_channels, out_channels)
    if leading_groups < 1 or blocks % leading_groups:
        raise ValueError(
            f"groups must divide gcd(in_channels, out_channels) = {blocks} (in_channels="
            f"{in_channels}, out_channels={out_channels}); got {leading_groups}"
        )
    lead = prime_factors(leading_groups)
    return lead + prime_factors(blocks // leading_groups)


def radix_digits(factors: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """digits[a, k] = d_k(a), the mixed-radix digits of every block index a in [0, prod(factors))
    (int64, [C, K]; digit 0 the most significant)."""
    index = torch.arange(math.prod(factors), device=device)
    digits = []
    for n in reversed(factors):
        digits.append(index % n)
        index = index // n
    if not digits:
        return torch.zeros(1, 0, dtype=torch.int64, device=device)
    return torch.stack(digits[::-1], dim=1)


def relationship_matrix(gates: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """U [C, C] (C = prod(factors)) from the gate values `gates` ([K], 0 or 1, or straight-through
    tensors equal to those); differentiable in `gates`, U in gates' dtype.

    Built from the digits (`U[a, b] = prod_k (g_k if d_k(a) != d_k(b) else 1)`), which is the
    Kronecker product of the U_k for binary gates, without materialising the K factors.
    """
    digits = radix_digits(factors, gates.device)
    blocks = digits.shape[0]
    u = torch.ones(blocks, blocks, dtype=gates.dtype, device=gates.device)
    one = torch.ones((), dtype=gates.dtype, device=gates.device)
    for k in range(len(factors)):
        same = digits[:, None, k] == digits[None, :, k]
        u = u * torch.where(same, one, gates[k])
    return u


def expand_blocks(u: torch.Tensor, out_channels: int, in_channels: int) -> torch.Tensor:
    """mask [out_channels, in_channels] with mask[o, i] = u[o // (out / C), i // (in / C)] for u
    of shape [C, C] (C dividing both); differentiable in u."""
    blocks = u.shape[0]
    ro, ri = out_channels // blocks, in_channels // blocks
    return u[:, None, :, None].expand(blocks, ro, blocks, ri).reshape(out_channels, in_channels)


def cost_fraction(gates: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """nnz(U) / C^2 = prod_k (1 + g_k (n_k - 1)) / n_k (0-d, gates' dtype): the fraction of the
    dense conv's weights and multiply-adds the layer keeps, which is 1 / G for binary gates.
    Differentiable in `gates` ([K]); 1 for K = 0."""
    if len(factors) == 0:
        return torch.ones((), dtype=gates.dtype, device=gates.device)
    n = torch.tensor(factors, dtype=gates.dtype, device=gates.device)
    return ((1 + gates * (n - 1)) / n).prod()


def num_groups(closed: Sequence[bool], factors: Sequence[int]) -> int:
    """G = product of the sizes of the closed gates (`closed[k]` True where g_k = 0)."""
    return math.prod(n for n, c in zip(factors, closed, strict=True) if c)


@dataclass(frozen=True)
class GroupPlan:
    """The grouped conv a binary gate pattern amounts to.

    `x_p = x[:, in_src]`, `y_p = conv2d(x_p, w_p, groups=groups)`, `y = y_p[:, out_perm]`, where
    `out_perm` is the inverse of `out_src` (and `in_perm` of `in_src`): permuted channel j holds
    original channel `*_src[j]`. The `*_src` / `*_perm` are 1-D int64, or all None when the
    permutation is the identity.
    """

    groups: int
    in_src: torch.Tensor | None
    in_perm: torch.Tensor | None
    out_src: torch.Tensor | None
    out_perm: torch.Tensor | None


def _channel_source(block_src: torch.Tensor, per_block: int) -> torch.Tensor:
    offsets = torch.arange(per_block, device=block_src.device)
    return (block_src[:, None] * per_block + offsets).reshape(-1)


def group_plan(
    closed: Sequence[bool],
    factors: Sequence[int],
    in_channels: int,
    out_channels: int,
    device: torch.device | None = None,
) -> GroupPlan:
    """The `GroupPlan` of the gate pattern `closed` ([K] bools, True where g_k = 0).

    The blocks are reordered so that the closed gates' digits become the most significant (each
    part keeping its order): then a group is a run of C / G consecutive blocks.
    """
    groups = num_groups(closed, factors)
    order = [k for k, c in enumerate(closed) if c] + [k for k, c in enumerate(closed) if not c]
    if order == sorted(order):
        return GroupPlan(groups, None, None, None, None)
    digits = radix_digits(factors, device)
    new_index = torch.zeros(digits.shape[0], dtype=torch.int64, device=device)
    for k in order:
        new_index = new_index * factors[k] + digits[:, k]
    block_src = torch.argsort(new_index)  # new_index is a permutation: argsort inverts it
    blocks = digits.shape[0]
    in_src = _channel_source(block_src, in_channels // blocks)
    out_src = _channel_source(block_src, out_channels // blocks)
    return GroupPlan(groups, in_src, torch.argsort(in_src), out_src, torch.argsort(out_src))
