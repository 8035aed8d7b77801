"""`SparseLinearSpline`: the inference form of a trained `LinearSpline`, its knots only.

    sigma_c(x) = intercept[c] + slope[c] * x + sum_j jumps[c, j] * ReLU(x - knots[c, j])

Each channel keeps the knots whose slope change survived sparsification, in increasing order
(rows padded with +inf knots of zero jump to the largest count J). Up to `LOOP_KNOTS` knots the
forward is that sum, 1 + J multiply-adds per element; beyond, a binary search for x's segment
and two gathers of the running sums (x * sum(jumps) - sum(jumps * knots) over the knots left of
x), so that a spline frozen with many knots left costs O(log J), not O(J).
"""

from __future__ import annotations

import torch
from torch import nn

from .calculus import knot_mask, slope_changes
from .grid import knot_positions

__all__ = ["LOOP_KNOTS", "SparseLinearSpline"]

LOOP_KNOTS = 4


class SparseLinearSpline(nn.Module):
    """Per-channel piecewise linear activations given by their knots (see the module docstring).

    Buffers: intercept [C], slope [C] (the slope left of every knot), knots [C, J] (increasing
    in each row; +inf in the padding) and jumps [C, J] (the slope change at each knot; 0 in the
    padding). Built by `from_coefficients` (or
    `LinearSpline.to_inference()`).
    """

    def __init__(self, intercept, slope, knots, jumps) -> None:
        super().__init__()
        C = intercept.shape[0]
        if slope.shape != (C,) or knots.dim() != 2 or knots.shape[0] != C:
            raise ValueError(
                f"intercept and slope must be [C], knots and jumps [C, J]; got "
                f"{tuple(intercept.shape)}, {tuple(slope.shape)}, {tuple(knots.shape)}"
            )
        if jumps.shape != knots.shape:
            raise ValueError(f"jumps must have knots' shape {tuple(knots.shape)}, got "
                             f"{tuple(jumps.shape)}")  # fmt: skip
        self.register_buffer("intercept", intercept)
        self.register_buffer("slope", slope)
        self.register_buffer("knots", knots)
        self.register_buffer("jumps", jumps)

    @classmethod
    @torch.no_grad()
    def from_coefficients(
        cls, coefficients: torch.Tensor, spacing: float, threshold: float = 0.0
    ) -> SparseLinearSpline:
        """The splines of knot values `coefficients` [C, K] on the grid of `spacing`, keeping
        the knots of `knot_mask(coefficients, spacing, threshold)` (the others must already be
        removed, `calculus.sparsify`, for the result to equal the grid spline)."""
        C, K = coefficients.shape
        acc = coefficients.double()
        positions = knot_positions(K, spacing, device=acc.device)
        mask = knot_mask(coefficients, spacing, threshold)  # interior knots 1..K-2
        changes = slope_changes(acc, spacing)
        J = int(mask.sum(-1).max()) if C else 0
        order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)[:, :J]
        kept = torch.gather(mask, 1, order)
        knots = torch.where(kept, positions[1:-1][order], torch.inf)
        jumps = torch.where(kept, torch.gather(changes, 1, order), 0.0)
        slope = (acc[:, 1] - acc[:, 0]) / spacing
        intercept = acc[:, 0] - slope * positions[0]
        dtype = coefficients.dtype
        return cls(intercept.to(dtype), slope.to(dtype), knots.to(dtype), jumps.to(dtype))

    @property
    def num_channels(self) -> int:
        return self.intercept.shape[0]

    def knots_per_channel(self) -> torch.Tensor:
        """[C] int64: the knots each channel keeps."""
        return (self.jumps != 0).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"x must have shape [N, {self.num_channels}, ...], got "
                             f"{tuple(x.shape)}")  # fmt: skip
        shape = (self.num_channels, *([1] * (x.dim() - 2)))
        dtype = torch.promote_types(x.dtype, self.intercept.dtype)
        xs = x.to(dtype)
        intercept, slope = self.intercept.to(dtype), self.slope.to(dtype)
        y = torch.addcmul(intercept.view(shape), slope.view(shape), xs)
        knots, jumps = self.knots.to(dtype), self.jumps.to(dtype)
        if knots.shape[1] <= LOOP_KNOTS:
            for j in range(knots.shape[1]):
                knot = knots[:, j].view(shape)
                y = y.addcmul_(jumps[:, j].view(shape), (xs - knot).clamp_(min=0))
            return y.to(x.dtype)
        # Running sums over the knots left of x: sum_j a_j (x - t_j) = x * A - B.
        zero = jumps.new_zeros(self.num_channels, 1)
        run_a = torch.cat([zero, jumps.cumsum(-1)], -1)
        run_b = torch.cat([zero, torch.where(jumps != 0, jumps * knots, 0.0).cumsum(-1)], -1)
        rows = xs.movedim(1, 0).reshape(self.num_channels, -1).contiguous()
        left = torch.searchsorted(knots.contiguous(), rows, right=True)
        a = run_a.gather(1, left).view(xs.movedim(1, 0).shape).movedim(0, 1)
        b = run_b.gather(1, left).view(xs.movedim(1, 0).shape).movedim(0, 1)
        return (y + xs * a - b).to(x.dtype)

    def extra_repr(self) -> str:
        return f"num_channels={self.num_channels}, max_knots={self.knots.shape[1]}"
