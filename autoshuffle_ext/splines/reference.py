"""The plain PyTorch reference of `spline_activation`: index arithmetic and gathers,
differentiated by autograd alone (no custom formula). It is the truth that the op's tests and
benchmarks compare against, and what a PyTorch user would write without the fused op."""

from __future__ import annotations

import torch

__all__ = ["linear_spline_reference"]


def linear_spline_reference(
    x: torch.Tensor, coefficients: torch.Tensor, spacing: float
) -> torch.Tensor:
    """y[:, c] = the linear spline through coefficients[c, k] at (k - K // 2) * spacing,
    extended linearly with its end slopes, at x[:, c] (x [N, C, ...], coefficients [C, K]).

    Computed in the coefficients' dtype promoted with x's (float32 for a half x), returned in
    x's dtype; differentiable in x and coefficients through autograd.
    """
    C, K = coefficients.shape
    half = K // 2
    dtype = torch.promote_types(x.dtype, coefficients.dtype)
    u = x.to(dtype) / spacing
    low = torch.floor(u.detach()).clamp(-half, K - 2 - half).nan_to_num(nan=0.0)
    t = u - low
    left_index = (low + half).long()
    rows = torch.arange(C, device=x.device).view(1, C, *([1] * (x.dim() - 2)))
    c = coefficients.to(dtype)
    left = c[rows, left_index]
    right = c[rows, left_index + 1]
    return (left + t * (right - left)).to(x.dtype)
