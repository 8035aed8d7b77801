"""`BjorckLinear`: a linear layer whose weight is Björck-orthonormalised in the forward (all its
singular values 1: an isometry or a co-isometry, 1-Lipschitz in l2), as a learned structure."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.structure import LearnedStructure, ParamGroup
from ._checks import check_int
from .bjorck import (
    DEFAULT_BJORCK_ITERS,
    DEFAULT_POWER_ITERS,
    bjorck_orthonormalize,
    orthogonality_error,
)
from .eval_cache import cached_in_eval

__all__ = ["BjorckLinear"]


class BjorckLinear(LearnedStructure):
    """`y = x W^T + b` with W = Björck(weight): [..., in] -> [..., out].

    Args:
        in_features, out_features: as `nn.Linear` (>= 1).
        bias: add a learned bias.
        bjorck_iters, power_iters: of the orthonormalisation (`bjorck_orthonormalize`).
        device, dtype: of the parameters.
        generator: for the initialisation (a random orthogonal weight scaled by 1/sqrt(in), bias
            uniform in +-1/sqrt(in), as the reference code).

    Parameters: `weight` [out, in] (unconstrained; the structure parameter), `bias` [out] or
    None. In evaluation mode the orthonormal weight is computed once and reused while `weight`
    is unchanged; `to_inference` returns the `nn.Linear` holding it.

    Raises:
        TypeError: a size that is not an int, bias not a bool.
        ValueError: sizes below 1; in the forward, an input whose last dim is not in_features.
    """

    param_group = "orthogonal"

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        bjorck_iters: int = DEFAULT_BJORCK_ITERS,
        power_iters: int = DEFAULT_POWER_ITERS,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__} {bias!r}")
        self.bjorck_iters = check_int("bjorck_iters", bjorck_iters, 1)
        self.power_iters = check_int("power_iters", power_iters, 1)
        self.weight = nn.Parameter(
            torch.empty(out_features, in_features, device=device, dtype=dtype)
        )
        self.bias = (
            nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """A random orthogonal weight scaled by 1/sqrt(in); bias uniform in +-1/sqrt(in)."""
        bound = 1 / math.sqrt(self.in_features)
        nn.init.orthogonal_(self.weight, gain=bound, generator=generator)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound, generator=generator)

    def orthonormal_weight(self) -> torch.Tensor:
        """Björck(weight) [out, in] (differentiable), recomputed at every call."""
        return bjorck_orthonormalize(self.weight, self.bjorck_iters, power_iters=self.power_iters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"BjorckLinear: input x must have shape [..., {self.in_features}], got "
                f"{tuple(x.shape)}"
            )
        weight = cached_in_eval(self, (self.weight,), self.orthonormal_weight)
        return F.linear(x, weight, self.bias)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """sigma_max of the orthonormal weight (1 up to the orthonormalisation's error)."""
        return float(torch.linalg.matrix_norm(self.orthonormal_weight().double(), ord=2))

    def param_groups(self) -> list[ParamGroup]:
        """The weight, in the group "orthogonal", without weight decay (Björck undoes any
        scale); the bias trains with the network's parameters."""
        return [ParamGroup(self.param_group, (self.weight,), self.lr, 0.0)]

    @torch.no_grad()
    def to_inference(self) -> nn.Linear:
        """The `nn.Linear` holding the orthonormal weight (and the bias)."""
        weight = self.orthonormal_weight()
        linear = nn.Linear(
            self.in_features,
            self.out_features,
            bias=self.bias is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        linear.weight.copy_(weight)
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """The matrix product, per sample (the orthonormalisation, per batch, not counted)."""
        product = output[0].numel() * self.in_features
        return product, product

    def report(self) -> dict:
        """penalty (none: 0), orthogonality (max |sigma - 1| of the orthonormal weight),
        lipschitz_bound."""
        with torch.no_grad():
            return {
                "penalty": 0.0,
                "orthogonality": float(orthogonality_error(self.orthonormal_weight())),
                "lipschitz_bound": self.lipschitz_bound(),
            }

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_eval_cache": None}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )
