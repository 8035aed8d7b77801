"""The uniform knot grid of a linear-spline activation and its initial knot values.

A spline of `size` knots (odd) over [-range, range] has its knots at k * T for
k = -(size // 2) .. size // 2, with the spacing T = range / (size // 2): knot index 0 of the
coefficient rows is the leftmost one (-range), index size // 2 sits at 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["INITS", "LEAKY_SLOPE", "initial_knot_values", "knot_positions", "spline_spacing"]

# The leaky ReLU's slope left of 0 in init "leaky_relu" (deepsplines' 0.01, as F.leaky_relu's).
LEAKY_SLOPE = 0.01

INITS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, LEAKY_SLOPE),
    "identity": lambda t: t.clone(),
}


def spline_spacing(size: int, range: float) -> float:
    """T = range / (size // 2): the spacing of `size` knots (odd, >= 3) over [-range, range].

    Raises:
        TypeError: size is not an int (bool is not accepted) or range not a number.
        ValueError: size even or < 3, range not finite and > 0.
    """
    if not isinstance(size, int) or isinstance(size, bool):
        raise TypeError(f"size must be an int, got {type(size).__name__} {size!r}")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd int >= 3 (a knot at 0), got {size}")
    if isinstance(range, bool) or not isinstance(range, (int, float)):
        raise TypeError(f"range must be a float, got {type(range).__name__} {range!r}")
    if not (math.isfinite(range) and range > 0):
        raise ValueError(f"range must be a finite float > 0, got {range}")
    return float(range) / (size // 2)


def knot_positions(size: int, spacing: float, **tensor_options) -> torch.Tensor:
    """The `size` knot positions (k - size // 2) * spacing, k = 0..size-1 (1-D, float64 unless
    `dtype` is given)."""
    tensor_options.setdefault("dtype", torch.float64)
    return (torch.arange(size, **tensor_options) - size // 2) * spacing


def initial_knot_values(
    init: str | Callable[[torch.Tensor], torch.Tensor],
    num_channels: int,
    size: int,
    spacing: float,
) -> torch.Tensor:
    """[num_channels, size] float32 knot values of the initial activation.

    init: "relu", "leaky_relu" (slope LEAKY_SLOPE left of 0) or "identity", or an elementwise
        function or module (e.g. nn.ReLU6(), nn.PReLU(C)): it is evaluated at the knots, on a
        [size, num_channels] tensor whose column c is channel c, so a per-channel module (PReLU
        with C parameters) gives each channel its own values. A piecewise linear function with
        kinks on the grid is represented exactly on [-range, range]; beyond, the spline goes on
        with its end slopes.

    Raises:
        ValueError: an unknown init name, or an init whose values are not [size, C] or finite.
    """
    if isinstance(init, str):
        if init not in INITS:
            raise ValueError(f"init must be one of {sorted(INITS)} or a callable, got {init!r}")
        fn = INITS[init]
    elif callable(init):
        fn = init
    else:
        raise TypeError(f"init must be a str or a callable, got {type(init).__name__}")
    grid = knot_positions(size, spacing).float()
    with torch.no_grad():
        if isinstance(init, nn.Module):
            p = next(init.parameters(), None)
            grid = grid if p is None else grid.to(p.device, p.dtype)
        values = fn(grid[:, None].expand(size, num_channels).contiguous())
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (size, num_channels):
        got = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"init must map a [{size}, {num_channels}] tensor to one of the same "
                         f"shape, got {got}")  # fmt: skip
    values = values.detach().to(device="cpu", dtype=torch.float32).t().contiguous()
    if not bool(torch.isfinite(values).all()):
        raise ValueError("init gave non-finite values at the knots")
    return values
