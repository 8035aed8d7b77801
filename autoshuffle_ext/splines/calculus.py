"""What a linear spline's knot values say about its function, and the two edits of its knots.

A spline with knot values c[0..K-1] (rows of a [C, K] tensor) on the grid of spacing T is
sigma(x) = sum_k a_k ReLU(x - x_k) + b1 x + b0 on the grid, where the slope changes
a_k = (c[k + 1] - 2 c[k] + c[k - 1]) / T sit at the interior knots x_1..x_{K-2}, and it is
linear beyond the grid with its end slopes. Hence:

* `segment_slopes`: the K - 1 slopes (c[k + 1] - c[k]) / T; the largest |slope| of a row is that
  activation's Lipschitz constant;
* `slope_changes`: the a_k; TV(2)(sigma) = sum_k |a_k| (`tv2`), the paper's penalty;
* `clip_slopes`: every slope clipped to [-bound, bound], the knot values rebuilt by summing the
  slopes, then shifted by the mean of the change so that the activation stays where it was
  (the slope projection of the same group's 1-Lipschitz splines);
* `sparsify`: slope changes below a threshold removed; the kept ones are kept exactly and the
  affine part (b1, b0) is refitted by least squares over the knot values.
"""

from __future__ import annotations

import torch

__all__ = [
    "clip_slopes",
    "knot_mask",
    "numerical_zero",
    "segment_slopes",
    "slope_changes",
    "sparsify",
    "tv2",
]


def segment_slopes(coefficients: torch.Tensor, spacing: float) -> torch.Tensor:
    """[..., K - 1]: the slope of each grid segment (the end ones continue beyond the grid)."""
    return coefficients.diff(dim=-1) / spacing


def slope_changes(coefficients: torch.Tensor, spacing: float) -> torch.Tensor:
    """[..., K - 2]: a_k = (c[k + 1] - 2 c[k] + c[k - 1]) / T at the interior knots 1..K-2."""
    return coefficients.diff(n=2, dim=-1) / spacing


def tv2(coefficients: torch.Tensor, spacing: float) -> torch.Tensor:
    """[...]: the second-order total variation sum_k |a_k| of each row (differentiable)."""
    return slope_changes(coefficients, spacing).abs().sum(-1)


def numerical_zero(coefficients: torch.Tensor, spacing: float) -> float:
    """The size below which a slope change is rounding noise of the knot values: that of their
    dtype, at least float32's (the modules create them in float32; a module moved to float64
    keeps float32 noise)."""
    scale = float(coefficients.detach().abs().max()) if coefficients.numel() else 0.0
    eps = max(torch.finfo(coefficients.dtype).eps, torch.finfo(torch.float32).eps)
    return 8 * eps * max(scale, 1.0) / spacing


def knot_mask(coefficients: torch.Tensor, spacing: float, threshold: float = 0.0) -> torch.Tensor:
    """[..., K - 2] bool: the interior knots whose |a_k| exceeds `threshold` (and rounding
    noise: `numerical_zero`), i.e. the knots a sparsified spline keeps."""
    floor = max(float(threshold), numerical_zero(coefficients, spacing))
    return slope_changes(coefficients.detach(), spacing).abs() > floor


@torch.no_grad()
def clip_slopes(coefficients: torch.Tensor, spacing: float, bound: float) -> torch.Tensor:
    """New knot values [..., K] whose segment slopes are those of `coefficients` clipped to
    [-bound, bound], shifted so that their mean change is 0. Rows already within the bound are
    returned exactly (not rebuilt)."""
    acc = coefficients.double()
    steps = acc.diff(dim=-1)
    limit = float(bound) * spacing
    clipped = steps.clamp(-limit, limit)
    rebuilt = torch.cat([torch.zeros_like(acc[..., :1]), clipped.cumsum(-1)], dim=-1)
    rebuilt += (acc - rebuilt).mean(-1, keepdim=True)
    inside = (steps.abs() <= limit).all(-1, keepdim=True)
    return torch.where(inside, acc, rebuilt).to(coefficients.dtype)


@torch.no_grad()
def sparsify(coefficients: torch.Tensor, spacing: float, threshold: float) -> torch.Tensor:
    """New knot values [..., K] of the spline with the slope changes |a_k| <= threshold (or at
    rounding level, `knot_mask`) removed and every other a_k kept; its affine part is the least
    squares fit to the old knot values. Computed in float64, returned in the input's dtype."""
    acc = coefficients.double()
    K = acc.shape[-1]
    removed = ~knot_mask(coefficients, spacing, threshold)
    delta = torch.where(removed, -slope_changes(acc, spacing), 0.0) * spacing  # change of a * T
    # e: the change of the knot values with second differences delta, e[0] = e[1] = 0.
    zero = torch.zeros_like(acc[..., :1])
    steps = torch.cat([zero, delta.cumsum(-1)], dim=-1)
    e = torch.cat([zero, steps.cumsum(-1)], dim=-1)
    # Remove e's least squares affine part over the knots (k centred: the two fits decouple).
    k = torch.arange(K, dtype=acc.dtype, device=acc.device) - (K - 1) / 2
    slope = (e * k).sum(-1, keepdim=True) / (k * k).sum()
    e = e - e.mean(-1, keepdim=True) - slope * k
    return (acc + e).to(coefficients.dtype)
