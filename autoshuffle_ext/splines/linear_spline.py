"""`LinearSpline`: a trainable linear-spline activation per channel, with a controlled
Lipschitz constant (Aziznejad, Gupta, Campos, Unser, "Deep Neural Networks with Trainable
Activations and Controlled Lipschitz Constant", IEEE TSP 2020; reference code `deepsplines`).

Each channel's activation is the linear spline through its knot values on a uniform grid of
`size` knots over [-range, range], linear beyond with its end slopes (`grid.py`); the forward is
the fused op `spline_activation`. Trained with the penalty lambda * TV(2) (sum of the absolute
slope changes, which favours few knots; BV(2) adds |sigma(0)| + |sigma(1)|), optionally kept
`lipschitz`-Lipschitz by clipping every slope after each step (`project_`), and sparsified for
inference: slope changes below `knot_threshold` are removed and each channel keeps only its
knots (`to_inference` -> `SparseLinearSpline`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..modules.structure import LearnedStructure, ParamGroup
from ..ops.spline_activation import spline_activation
from . import calculus
from .grid import initial_knot_values, spline_spacing
from .reference import linear_spline_reference
from .sparse import SparseLinearSpline

__all__ = ["ACTIVATIONS", "LinearSpline"]

# Activation names and module types `LinearSpline.from_activation` starts from, and the init
# each one gives (modules with options, e.g. LeakyReLU(0.2), are evaluated on the grid).
ACTIVATIONS = {"relu": "relu", "leaky_relu": "leaky_relu", "identity": "identity"}
_MODULE_INITS = (nn.ReLU, nn.LeakyReLU, nn.Identity, nn.ReLU6, nn.Hardtanh, nn.PReLU)


class LinearSpline(LearnedStructure):
    """Per-channel linear-spline activations on [N, C, ...] inputs (channels in dim 1).

    Args:
        num_channels: C.
        size: knots per channel (odd, >= 3; a knot at 0). deepsplines' default 51.
        range: the grid covers [-range, range]; knot spacing range / (size // 2).
        init: "leaky_relu" (slope 0.01 left of 0; deepsplines' default), "relu", "identity",
            or an elementwise function or module evaluated at the knots
            (`grid.initial_knot_values`).
        penalty_weight: lambda of the penalty (deepsplines' default 1e-4).
        lipschitz: None, or a bound L > 0: `project_()` clips every slope to [-L, L] (L = 1: a
            1-Lipschitz activation), and the penalty defaults to BV(2).
        regularizer: "tv2" (sum |a_k|) or "bv2" (TV(2) + |sigma(0)| + |sigma(1)|); None picks
            "bv2" with a Lipschitz bound, else "tv2" (deepsplines' choice).
        knot_threshold: slope changes |a_k| <= knot_threshold are removed at inference
            (`to_inference`) and not counted as knots (`report`); 0 removes only rounding noise,
            so that the inference form computes what the trained spline does.

    Parameter `coefficients` [C, size]: the knot values (its own optimizer group "spline", Adam
    lr 1e-3 in deepsplines, no weight decay).

    Raises:
        TypeError / ValueError: bad sizes, range, init, bounds (naming the argument).
    """

    param_group = "spline"
    lr = 1e-3

    def __init__(
        self,
        num_channels: int,
        size: int = 51,
        range: float = 4.0,
        init: str | Callable[[torch.Tensor], torch.Tensor] = "leaky_relu",
        penalty_weight: float = 1e-4,
        lipschitz: float | None = None,
        regularizer: str | None = None,
        knot_threshold: float = 0.0,
    ) -> None:
        super().__init__()
        if not isinstance(num_channels, int) or isinstance(num_channels, bool):
            raise TypeError(f"num_channels must be an int, got {type(num_channels).__name__}")
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        self.spacing = spline_spacing(size, range)
        if lipschitz is not None and not (math.isfinite(lipschitz) and lipschitz > 0):
            raise ValueError(f"lipschitz must be None or a finite float > 0, got {lipschitz}")
        regularizer = regularizer or ("bv2" if lipschitz is not None else "tv2")
        if regularizer not in ("tv2", "bv2"):
            raise ValueError(f"regularizer must be 'tv2', 'bv2' or None, got {regularizer!r}")
        if not (knot_threshold >= 0 and math.isfinite(knot_threshold)):
            raise ValueError(f"knot_threshold must be a finite float >= 0, got {knot_threshold}")
        if not (penalty_weight >= 0 and math.isfinite(penalty_weight)):
            raise ValueError(f"penalty_weight must be a finite float >= 0, got {penalty_weight}")
        self.num_channels = num_channels
        self.size = size
        self.range = float(range)
        self.init = init if isinstance(init, str) else type(init).__name__
        self.penalty_weight = float(penalty_weight)
        self.lipschitz = None if lipschitz is None else float(lipschitz)
        self.regularizer = regularizer
        self.knot_threshold = float(knot_threshold)
        self.coefficients = nn.Parameter(
            initial_knot_values(init, num_channels, size, self.spacing)
        )

    @classmethod
    def from_activation(
        cls, activation: str | nn.Module, num_channels: int, **options
    ) -> LinearSpline:
        """A spline that starts as `activation` (on the grid's range; linear beyond it):
        a name of ACTIVATIONS or a module (nn.ReLU, nn.LeakyReLU with its slope, nn.Identity,
        nn.ReLU6, nn.Hardtanh, nn.PReLU), e.g. to replace the nn.ReLU after a conv of
        `num_channels` outputs. `options` are LinearSpline's (size, range, penalty_weight...).

        Raises:
            ValueError: an unknown name; TypeError: another kind of module.
        """
        if "init" in options:
            raise TypeError("from_activation sets init from the activation; do not pass init")
        if isinstance(activation, str):
            if activation not in ACTIVATIONS:
                raise ValueError(
                    f"activation must be one of {sorted(ACTIVATIONS)} or a module, got "
                    f"{activation!r}"
                )
            return cls(num_channels, init=ACTIVATIONS[activation], **options)
        if isinstance(activation, nn.ReLU):
            return cls(num_channels, init="relu", **options)
        if isinstance(activation, nn.Identity):
            return cls(num_channels, init="identity", **options)
        if isinstance(activation, _MODULE_INITS):
            return cls(num_channels, init=activation, **options)
        raise TypeError(
            f"activation must be a name or one of {[m.__name__ for m in _MODULE_INITS]}, got "
            f"{type(activation).__name__}"
        )

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[1] != self.num_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"LinearSpline: x must have shape [N, {self.num_channels}, ...], "
                             f"got {got}")  # fmt: skip
        return spline_activation(x, self.coefficients, self.spacing)

    # -- what the knots say --------------------------------------------------------------------

    def slopes(self) -> torch.Tensor:
        """[C, size - 1]: the slope of each grid segment (the end ones continue beyond)."""
        return calculus.segment_slopes(self.coefficients, self.spacing)

    def slope_changes(self) -> torch.Tensor:
        """[C, size - 2]: the ReLU coefficients a_k at the interior knots."""
        return calculus.slope_changes(self.coefficients, self.spacing)

    def max_slopes(self) -> torch.Tensor:
        """[C]: each activation's Lipschitz constant (its largest |slope|), differentiable."""
        return self.slopes().abs().amax(-1)

    def lipschitz_constant(self) -> float:
        """The largest Lipschitz constant over the channels (what `lipschitz_bound` multiplies
        into the network's bound)."""
        with torch.no_grad():
            return float(self.max_slopes().max())

    def lipschitz_bound(self) -> float:
        """`lipschitz_constant()`: read by `asx.lipschitz.lipschitz_bound` (an elementwise
        activation's l2 bound is its largest slope)."""
        return self.lipschitz_constant()

    def knots_per_channel(self, threshold: float | None = None) -> torch.Tensor:
        """[C] int64: knots with |a_k| > threshold (default `knot_threshold`) per channel."""
        t = self.knot_threshold if threshold is None else threshold
        return calculus.knot_mask(self.coefficients, self.spacing, t).sum(-1)

    def tv2(self) -> torch.Tensor:
        """[C]: TV(2) of each channel's activation (differentiable)."""
        return calculus.tv2(self.coefficients, self.spacing)

    def values_at(self, points: torch.Tensor) -> torch.Tensor:
        """[len(points), C]: every activation at the 1-D `points` (differentiable)."""
        x = points.to(self.coefficients)[:, None].expand(-1, self.num_channels)
        return linear_spline_reference(x, self.coefficients, self.spacing)

    # -- LearnedStructure ----------------------------------------------------------------------

    def raw_penalty(self) -> torch.Tensor:
        """TV(2) summed over the channels; BV(2) adds sum |sigma(0)| + |sigma(1)|."""
        value = self.tv2().sum()
        if self.regularizer == "bv2":
            points = torch.tensor([0.0, 1.0], device=self.coefficients.device)
            value = value + self.values_at(points).abs().sum()
        return value

    @torch.no_grad()
    def project_(self) -> None:
        """With a `lipschitz` bound L, clips every slope to [-L, L] (in place)."""
        if self.lipschitz is not None:
            clipped = calculus.clip_slopes(self.coefficients, self.spacing, self.lipschitz)
            self.coefficients.copy_(clipped)

    @torch.no_grad()
    def sparsify_(self, threshold: float | None = None) -> LinearSpline:
        """Removes the slope changes |a_k| <= threshold (default `knot_threshold`) in place,
        keeping the others and refitting the affine part (`calculus.sparsify`); returns self."""
        t = self.knot_threshold if threshold is None else threshold
        self.coefficients.copy_(calculus.sparsify(self.coefficients, self.spacing, t))
        return self

    @torch.no_grad()
    def to_inference(self, threshold: float | None = None) -> SparseLinearSpline:
        """The sparsified spline (threshold default `knot_threshold`), its knots only. With the
        threshold 0 it computes what this module does (to rounding)."""
        t = self.knot_threshold if threshold is None else threshold
        sparse = calculus.sparsify(self.coefficients, self.spacing, t)
        return SparseLinearSpline.from_coefficients(sparse, self.spacing, t)

    def param_groups(self) -> list[ParamGroup]:
        return [ParamGroup(self.param_group, (self.coefficients,), self.lr, 0.0)]

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """Training: one multiply for x / T and one multiply-add for the interpolation per
        element; inference: 1 + (knots kept) multiply-adds per element."""
        elements = output[0].numel() if output.dim() else 0
        with torch.no_grad():
            kept = int(self.knots_per_channel().max())
        return 2 * elements, (1 + kept) * elements

    def report(self) -> dict:
        """penalty (unweighted), regularizer, knots (per channel, at `knot_threshold`),
        mean_knots, max_slope (the largest Lipschitz constant of a channel), lipschitz (the
        bound, or None), distance (largest change of a knot value that sparsifying at
        `knot_threshold` makes)."""
        with torch.no_grad():
            knots = self.knots_per_channel()
            sparse = calculus.sparsify(self.coefficients, self.spacing, self.knot_threshold)
            return {
                "penalty": float(self.raw_penalty()),
                "regularizer": self.regularizer,
                "knots": knots.tolist(),
                "mean_knots": float(knots.double().mean()),
                "max_slope": self.lipschitz_constant(),
                "lipschitz": self.lipschitz,
                "distance": float((sparse - self.coefficients).abs().max()),
            }

    def extra_repr(self) -> str:
        bound = "" if self.lipschitz is None else f", lipschitz={self.lipschitz}"
        return (
            f"{self.num_channels}, size={self.size}, range={self.range}, init={self.init!r}, "
            f"penalty_weight={self.penalty_weight}, regularizer={self.regularizer!r}{bound}"
        )
