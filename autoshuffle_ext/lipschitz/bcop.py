"""`BCOPConv2d`: a convolution whose operator is exactly orthogonal (BCOP, Li et al., NeurIPS
2019), as a learned structure.

The parameters are 2(k - 1) + 1 unconstrained c x c matrices (c = max(in, out)); the forward
orthonormalises them (Björck, one batched op) and assembles the kernel (`bcop_kernel`), applied
with circular padding at stride 1. A stride s is an invertible downsampling first (pixel
unshuffle: in -> in s^2 channels, k -> k / s), as the paper's networks do. In evaluation mode the
kernel is computed once and reused while the parameters are unchanged; `to_inference` returns
the plain `nn.Conv2d` (circular padding) holding it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.structure import LearnedStructure, ParamGroup
from ._checks import check_int
from .bcop_kernel import bcop_kernel, num_bcop_matrices
from .bjorck import (
    DEFAULT_BJORCK_ITERS,
    DEFAULT_POWER_ITERS,
    bjorck_orthonormalize,
    orthogonality_error,
)
from .circular import circular_conv2d, circular_conv_singular_values, circular_padding
from .eval_cache import cached_in_eval

__all__ = ["BCOPConv2d"]


class BCOPConv2d(LearnedStructure):
    """Orthogonal convolution: [N, in, H, W] -> [N, out, H / stride, W / stride].

    With in_channels * stride^2 == out_channels the map (without bias) preserves the l2 norm of
    every input; otherwise every singular value of the operator is 1 or 0 (it is an isometry
    when out is larger, a co-isometry when smaller): 1-Lipschitz in l2 either way.

    Args:
        in_channels, out_channels: channels of the input and output (>= 1).
        kernel_size: k (>= 1), a multiple of stride; the convolution after the downsampling has
            kernel k / stride.
        stride: 1, or s > 1: an invertible downsampling by s first (H and W multiples of s).
        bias: add a learned bias (it shifts the output and changes no Lipschitz constant).
        bjorck_iters, power_iters: of the orthonormalisation (`bjorck_orthonormalize`).
        device, dtype: of the parameters.
        generator: for the initialisation (random orthogonal matrices; bias uniform in
            +-1/sqrt(out), as the reference code).

    Parameters: `matrices` [2(k'-1)+1, c, c] (k' = k / stride, c = max(in stride^2, out): the
    structure parameters, trained without weight decay, which would only shrink their scale),
    `bias` [out] or None.

    Raises:
        TypeError: a size that is not an int, bias not a bool.
        ValueError: sizes below 1, kernel_size not a multiple of stride; in the forward, an input
            not [N, in_channels, H, W] with H, W multiples of stride.
    """

    param_group = "orthogonal"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        bias: bool = True,
        *,
        bjorck_iters: int = DEFAULT_BJORCK_ITERS,
        power_iters: int = DEFAULT_POWER_ITERS,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.kernel_size = check_int("kernel_size", kernel_size, 1)
        self.stride = check_int("stride", stride, 1)
        if kernel_size % stride:
            raise ValueError(
                f"kernel_size must be a multiple of stride, got kernel_size={kernel_size} and "
                f"stride={stride}"
            )
        if not isinstance(bias, bool):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__} {bias!r}")
        self.bjorck_iters = check_int("bjorck_iters", bjorck_iters, 1)
        self.power_iters = check_int("power_iters", power_iters, 1)
        # The convolution after the invertible downsampling.
        self.conv_in_channels = in_channels * stride * stride
        self.conv_kernel_size = kernel_size // stride
        c = max(self.conv_in_channels, out_channels)
        self.matrices = nn.Parameter(
            torch.empty(num_bcop_matrices(self.conv_kernel_size), c, c, device=device, dtype=dtype)
        )
        self.bias = (
            nn.Parameter(torch.empty(out_channels, device=device, dtype=dtype)) if bias else None
        )
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Random orthogonal matrices scaled by 1/sqrt(c); bias uniform in +-1/sqrt(out)."""
        c = self.matrices.shape[-1]
        for m in self.matrices:
            nn.init.orthogonal_(m, gain=1 / math.sqrt(c), generator=generator)
        if self.bias is not None:
            bound = 1 / math.sqrt(self.out_channels)
            nn.init.uniform_(self.bias, -bound, bound, generator=generator)

    # -- the kernel ------------------------------------------------------------------------------

    def orthonormal_matrices(self) -> torch.Tensor:
        """The Björck-orthonormalised parameters [2(k'-1)+1, c, c] (differentiable)."""
        return bjorck_orthonormalize(self.matrices, self.bjorck_iters, power_iters=self.power_iters)

    def kernel(self) -> torch.Tensor:
        """The kernel [out, in * stride^2, k / stride, k / stride] of the convolution after the
        downsampling, recomputed (differentiable) at every call."""
        return bcop_kernel(
            self.orthonormal_matrices(),
            self.conv_in_channels,
            self.out_channels,
            self.conv_kernel_size,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.stride
        if x.dim() != 4 or x.shape[1] != self.in_channels or x.shape[2] % s or x.shape[3] % s:
            raise ValueError(
                f"BCOPConv2d: input x must have shape [N, {self.in_channels}, H, W] with H and W "
                f"multiples of stride {s}, got {tuple(x.shape)}"
            )
        if s > 1:
            x = F.pixel_unshuffle(x, s)
        weight = cached_in_eval(self, (self.matrices,), self.kernel)
        return circular_conv2d(x, weight, self.bias)

    # -- Lipschitz constant ----------------------------------------------------------------------

    @torch.no_grad()
    def singular_values(self, input_size: tuple[int, int]) -> torch.Tensor:
        """The exact singular values of the layer (without bias) on an [in, H, W] input,
        input_size = (H, W): [H / s, W / s, min(in s^2, out)] (`circular_conv_singular_values`;
        the downsampling is orthogonal).

        Raises:
            ValueError: input_size not two ints, multiples of stride, at least the kernel."""
        ok = (
            isinstance(input_size, (tuple, list))
            and len(input_size) == 2
            and all(isinstance(v, int) and v % self.stride == 0 for v in input_size)
        )
        if not ok:
            raise ValueError(
                f"input_size must be two ints (H, W), multiples of stride {self.stride}, got "
                f"{input_size!r}"
            )
        size = (input_size[0] // self.stride, input_size[1] // self.stride)
        return circular_conv_singular_values(self.kernel(), size)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """An upper bound on the l2 operator norm for every input size: sigma_max(H) times, per
        projector P, max over its eigenvalues l of |l| + |1 - l| (the norm bound of P + w (I - P)
        for |w| = 1); 1 up to the orthonormalisation's error."""
        ortho = self.orthonormal_matrices().double()
        bound = torch.linalg.matrix_norm(
            ortho[0, : self.out_channels, : self.conv_in_channels], ord=2
        )
        if self.conv_kernel_size > 1:
            half = ortho[1:, :, : ortho.shape[-1] // 2]
            eig = torch.linalg.eigvalsh(half @ half.mT)
            bound = bound * (eig.abs() + (1 - eig).abs()).amax(dim=-1).prod()
        return float(bound)

    # -- the protocol ----------------------------------------------------------------------------

    def param_groups(self) -> list[ParamGroup]:
        """The matrices, in the group "orthogonal", without weight decay (Björck undoes any
        scale: decay would only raise their effective step size); the bias trains with the
        network's parameters."""
        return [ParamGroup(self.param_group, (self.matrices,), self.lr, 0.0)]

    @torch.no_grad()
    def to_inference(self) -> nn.Module:
        """The plain module computing the same outputs: `nn.Conv2d(padding=k // 2,
        padding_mode="circular")` holding the kernel (odd k / stride), an explicit
        `nn.CircularPad2d` before an unpadded conv (even), after an `nn.PixelUnshuffle(stride)`
        when stride > 1 (then an `nn.Sequential`)."""
        k = self.conv_kernel_size
        kernel = self.kernel()
        pad = circular_padding((k, k))
        odd = k % 2 == 1
        conv = nn.Conv2d(
            self.conv_in_channels,
            self.out_channels,
            k,
            padding=k // 2 if odd else 0,
            padding_mode="circular" if odd else "zeros",
            bias=self.bias is not None,
            device=kernel.device,
            dtype=kernel.dtype,
        )
        conv.weight.copy_(kernel)
        if self.bias is not None:
            conv.bias.copy_(self.bias)
        layers: list[nn.Module] = []
        if self.stride > 1:
            layers.append(nn.PixelUnshuffle(self.stride))
        if not odd:
            layers.append(nn.CircularPad2d(pad))
        layers.append(conv)
        return layers[0] if len(layers) == 1 else nn.Sequential(*layers)

    def macs(self, inputs: tuple, output: torch.Tensor) -> tuple[int, int]:
        """The convolution, per sample, in training and at inference (the kernel's assembly,
        once per batch in training and never at inference, is not counted)."""
        conv = output[0].numel() * self.conv_in_channels * self.conv_kernel_size**2
        return conv, conv

    def report(self) -> dict:
        """penalty (none: 0), orthogonality (max |sigma - 1| of the orthonormalised matrices),
        lipschitz_bound (`lipschitz_bound()`)."""
        with torch.no_grad():
            return {
                "penalty": 0.0,
                "orthogonality": float(orthogonality_error(self.orthonormal_matrices()).max()),
                "lipschitz_bound": self.lipschitz_bound(),
            }

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_eval_cache": None}

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, bias={self.bias is not None}"
        )
