"""`spline_activation`: one trainable linear spline per channel (Aziznejad et al., TSP 2020).

Channel c's activation is the linear spline through the knot values `coefficients[c, k]` at the
positions (k - K // 2) * spacing, k = 0..K-1, extended linearly beyond the grid with its end
slopes. With u = x / spacing and the left knot j of x's segment (clamped to 0..K-2),

    y = c[j] + t * (c[j + 1] - c[j]),    t = u - (j - K // 2),

one formula for the grid and both linear extensions (t < 0 left of the grid, t > 1 right of it).

Ops (`torch.ops.autoshuffle_ext.*`):

* `spline_activation(Tensor x, Tensor coefficients, float spacing) -> Tensor`: differentiable in
  x and coefficients, in reverse and forward mode. The forward-mode formula is the op itself:
  y is linear in the coefficients, so dy = slope(x) * dx + spline_activation(x, dc).
* `spline_activation_backward(grad, x, coefficients, spacing, need_x, need_coefficients)
  -> (dx, dcoefficients)`: dx = grad * slope(x); dcoefficients[c, j] and [c, j + 1] gather
  (1 - t) * grad and t * grad over the batch and pixels. An output not needed is empty ([0]).

Layouts: x is [N, C, ...] (>= 2 dims). y (and dx) have x's strides when x is dense
(contiguous, channels-last, any dense order), else are contiguous. dtypes: x is float16,
bfloat16, float32 or float64; coefficients have x's dtype, or are float32 with a half x. The
arithmetic runs in float32 (float64 for float64); dcoefficients is accumulated in it and
returned in the coefficients' dtype.

Kernels: on the CPU the C++ kernels of the compiled library (csrc/cpu/spline_activation.cpp:
one pass forward; the backward sums the coefficient gradient in per-thread buffers, reduced after
the parallel loop); on CUDA the Triton kernels of `autoshuffle_ext.kernels.spline` for
float16/bfloat16/float32 inputs and up to 256 knots (ATen for float64 and larger grids; the
kernels read the knots in float32). The schemas are the compiled library's
(csrc/ops/spline_activation.cpp); this file keeps the fake kernels, the autograd formula and the
CUDA path. Without the compiled library it defines the same schemas itself, with an ATen CPU
implementation (segment indices, a gather, index_add_ for the coefficient gradient).
The plain PyTorch reference (differentiable by autograd alone) is
`autoshuffle_ext.splines.reference.linear_spline_reference`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch._prims_common import is_non_overlapping_and_dense_or_false

from .._extension import extension_available

__all__ = ["check_spline_inputs", "spline_activation", "spline_output_like"]

_HALF = (torch.float16, torch.bfloat16)
_FLOATS = (*_HALF, torch.float32, torch.float64)


def check_spline_inputs(x: Tensor, coefficients: Tensor, spacing: float) -> None:
    """Raises TypeError / ValueError unless (x, coefficients, spacing) is a valid input of
    `spline_activation` (metadata only: eager, fake tensors and tracing all run it)."""
    for name, t in (("x", x), ("coefficients", coefficients)):
        if not isinstance(t, Tensor):
            raise TypeError(f"spline_activation: {name} must be a torch.Tensor, got "
                            f"{type(t).__name__}")  # fmt: skip
    if x.dim() < 2:
        raise ValueError(f"spline_activation: x must have shape [N, C, ...] (>= 2 dims), got "
                         f"{tuple(x.shape)}")  # fmt: skip
    C = x.shape[1]
    if coefficients.dim() != 2 or coefficients.shape[0] != C or coefficients.shape[1] < 2:
        raise ValueError(
            f"spline_activation: coefficients must have shape [C, K] with C = x.shape[1] = {C} "
            f"and K >= 2 knots, got {tuple(coefficients.shape)}"
        )
    if x.dtype not in _FLOATS:
        raise TypeError(f"spline_activation: x must be float16, bfloat16, float32 or float64, "
                        f"got {x.dtype}")  # fmt: skip
    c_dtype = coefficients.dtype
    if c_dtype != x.dtype and not (c_dtype == torch.float32 and x.dtype in _HALF):
        raise TypeError(
            f"spline_activation: coefficients must have x's dtype {x.dtype} (or float32 when x "
            f"is float16/bfloat16), got {c_dtype}"
        )
    if coefficients.device != x.device:
        raise ValueError(f"spline_activation: coefficients must be on x's device {x.device}, "
                         f"got {coefficients.device}")  # fmt: skip
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float)):
        raise TypeError(f"spline_activation: spacing must be a float, got "
                        f"{type(spacing).__name__}")  # fmt: skip
    if not (math.isfinite(spacing) and spacing > 0):
        raise ValueError(f"spline_activation: spacing must be a finite float > 0, got {spacing}")


def spline_output_like(x: Tensor) -> Tensor:
    """An uninitialised output for x: x's strides when x is dense, else contiguous."""
    if is_non_overlapping_and_dense_or_false(x):
        return torch.empty_like(x, memory_format=torch.preserve_format)
    return x.new_empty(x.shape)


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- ATen implementation (CUDA float64; the CPU kernel without the compiled library) ----


def _segments(x: Tensor, coefficients: Tensor, spacing: float) -> tuple[Tensor, Tensor, Tensor]:
    """(index, t, flat coefficients): index [x's shape] of the left knot of each element's
    segment in coefficients.reshape(-1) (channel offset included), t its position in it."""
    C, K = coefficients.shape
    acc = _acc_dtype(x.dtype)
    half = K // 2
    u = x.to(acc) / spacing
    low = torch.floor(u).clamp_(-half, K - 2 - half).nan_to_num_(nan=0.0)
    t = u - low  # NaN for a NaN x: the output is NaN, the index stays valid
    offsets = torch.arange(C, device=x.device) * K + half
    index = low.to(torch.int64) + offsets.view(C, *([1] * (x.dim() - 2)))
    return index, t, coefficients.to(acc).reshape(-1)


def _forward_aten(x: Tensor, coefficients: Tensor, spacing: float) -> Tensor:
    y = spline_output_like(x)
    if x.numel() == 0:
        return y
    index, t, flat = _segments(x, coefficients, spacing)
    left = flat[index]
    right = flat[index + 1]
    return y.copy_(torch.addcmul(left, t, right - left))


def _backward_aten(
    grad: Tensor,
    x: Tensor,
    coefficients: Tensor,
    spacing: float,
    need_x: bool,
    need_coefficients: bool,
) -> tuple[Tensor, Tensor]:
    dx = spline_output_like(x) if need_x else x.new_empty(0)
    dc = coefficients.new_zeros(coefficients.shape) if need_coefficients else x.new_empty(0)
    if x.numel() == 0 or not (need_x or need_coefficients):
        return dx, dc
    index, t, flat = _segments(x, coefficients, spacing)
    g = grad.to(t.dtype)
    if need_x:
        dx.copy_(g * ((flat[index + 1] - flat[index]) / spacing))
    if need_coefficients:
        w_right = t * g
        w_left = g - w_right
        acc = torch.zeros(flat.shape, dtype=t.dtype, device=x.device)
        index = index.reshape(-1)
        acc.index_add_(0, index, w_left.reshape(-1))
        acc.index_add_(0, index + 1, w_right.reshape(-1))
        dc = acc.view(coefficients.shape).to(coefficients.dtype)
    return dx, dc


# ---- CUDA: Triton ----


def _use_triton(x: Tensor, coefficients: Tensor) -> bool:
    from ..kernels import triton_available

    if not (triton_available() and x.dtype in (*_HALF, torch.float32)):
        return False
    from ..kernels.spline import MAX_KNOTS

    return coefficients.shape[1] <= MAX_KNOTS


def _pixels_merge(t: Tensor) -> bool:
    """Whether t is a view of [N, C, P] (its pixel dims merge), as the kernels address it."""
    try:
        t.view(t.shape[0], t.shape[1], -1)
    except RuntimeError:
        return False
    return True


def _triton_operand(x: Tensor) -> Tensor:
    return x if _pixels_merge(x) else x.contiguous()


def _forward_cuda(x: Tensor, coefficients: Tensor, spacing: float) -> Tensor:
    if not _use_triton(x, coefficients):
        return _forward_aten(x, coefficients, spacing)
    from ..kernels.spline import spline_forward

    coefficients = coefficients.float()  # the kernels read float32 knots
    y = spline_output_like(x)
    if _pixels_merge(y):
        return spline_forward(_triton_operand(x), coefficients, spacing, y)
    return y.copy_(spline_forward(x.contiguous(), coefficients, spacing,
                                  x.new_empty(x.shape)))  # fmt: skip


def _backward_cuda(
    grad: Tensor,
    x: Tensor,
    coefficients: Tensor,
    spacing: float,
    need_x: bool,
    need_coefficients: bool,
) -> tuple[Tensor, Tensor]:
    if not _use_triton(x, coefficients):
        return _backward_aten(grad, x, coefficients, spacing, need_x, need_coefficients)
    from ..kernels.spline import spline_backward

    c_dtype = coefficients.dtype
    coefficients = coefficients.float()  # the kernels read float32 knots
    dx = spline_output_like(x) if need_x else x.new_empty(0)
    target = dx if not need_x or _pixels_merge(dx) else x.new_empty(x.shape)
    dc = spline_backward(
        _triton_operand(grad), _triton_operand(x), coefficients, spacing,
        target if need_x else None, need_coefficients,
    )  # fmt: skip
    if need_x and target is not dx:
        dx.copy_(target)
    dc = dc.to(c_dtype) if dc is not None else x.new_empty(0)
    return dx, dc


# ---- registration ----

_LIB = torch.library.Library("autoshuffle_ext", "FRAGMENT")
if not extension_available():
    # The compiled library's schemas (csrc/ops/spline_activation.cpp), ATen on the CPU.
    _TAGS = (torch.Tag.needs_fixed_stride_order, torch.Tag.pt2_compliant_tag)
    _LIB.define(
        "spline_activation(Tensor x, Tensor coefficients, float spacing) -> Tensor", tags=_TAGS
    )
    _LIB.define(
        "spline_activation_backward(Tensor grad, Tensor x, Tensor coefficients, float spacing, "
        "bool need_x, bool need_coefficients) -> (Tensor, Tensor)",
        tags=_TAGS,
    )
    _LIB.impl("spline_activation", _forward_aten, "CPU")
    _LIB.impl("spline_activation_backward", _backward_aten, "CPU")
_LIB.impl("spline_activation", _forward_cuda, "CUDA")
_LIB.impl("spline_activation_backward", _backward_cuda, "CUDA")


@torch.library.register_fake("autoshuffle_ext::spline_activation")
def _(x: Tensor, coefficients: Tensor, spacing: float) -> Tensor:
    check_spline_inputs(x, coefficients, spacing)
    return spline_output_like(x)


@torch.library.register_fake("autoshuffle_ext::spline_activation_backward")
def _(
    grad: Tensor,
    x: Tensor,
    coefficients: Tensor,
    spacing: float,
    need_x: bool,
    need_coefficients: bool,
) -> tuple[Tensor, Tensor]:
    dx = spline_output_like(x) if need_x else x.new_empty(0)
    dc = coefficients.new_empty(coefficients.shape) if need_coefficients else x.new_empty(0)
    return dx, dc


_OP = torch.ops.autoshuffle_ext.spline_activation.default
_backward_op = torch.ops.autoshuffle_ext.spline_activation_backward.default


class _SplineFunction(torch.autograd.Function):
    """The op's autograd formula, reverse (`backward`) and forward (`jvp`) mode."""

    @staticmethod
    def forward(x: Tensor, coefficients: Tensor, spacing: float, keyset) -> Tensor:
        with torch._C._AutoDispatchBelowAutograd():
            return _OP.redispatch(keyset & torch._C._after_autograd_keyset, x, coefficients,
                                  spacing)  # fmt: skip

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, coefficients, spacing, _ = inputs
        ctx.spacing = spacing
        ctx.save_for_backward(x, coefficients)
        ctx.save_for_forward(x, coefficients)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, coefficients = ctx.saved_tensors
        need_x, need_c = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dx, dc = _backward_op(grad, x, coefficients, ctx.spacing, need_x, need_c)
        return (dx if need_x else None), (dc if need_c else None), None, None

    @staticmethod
    def jvp(ctx, x_t: Tensor | None, c_t: Tensor | None, _spacing_t, _keyset_t) -> Tensor:
        x, coefficients = ctx.saved_tensors
        out = None
        if c_t is not None:  # y is linear in the coefficients
            out = _OP(x, c_t.to(coefficients.dtype), ctx.spacing)
        if x_t is not None:  # dy = slope(x) * dx: the backward formula of x applied to x_t
            dx, _ = _backward_op(x_t.to(x.dtype), x, coefficients, ctx.spacing, True, False)
            out = dx if out is None else out + dx
        return out if out is not None else torch.zeros_like(x)


def _autograd_kernel(keyset, x: Tensor, coefficients: Tensor, spacing: float) -> Tensor:
    return _SplineFunction.apply(x, coefficients, spacing, keyset)


_LIB.impl("spline_activation", _autograd_kernel, "Autograd", with_keyset=True)


def spline_activation(x: Tensor, coefficients: Tensor, spacing: float) -> Tensor:
    """Per-channel linear splines on a uniform grid: y[:, c] = sigma_c(x[:, c]).

    Args:
        x: [N, C, ...] (>= 2 dims), float16/bfloat16/float32/float64, any strides.
        coefficients: [C, K], the knot values of each channel's spline at the positions
            (k - K // 2) * spacing (K >= 2; the modules use odd K, a knot at 0); x's dtype, or
            float32 with a float16/bfloat16 x; on x's device.
        spacing: the knot spacing T > 0.

    Returns:
        y with x's shape and dtype (x's strides when x is dense, else contiguous).
        Differentiable in x and coefficients, reverse and forward mode.

    Raises:
        TypeError: x or coefficients is not a tensor or has a dtype not allowed above; spacing is
            not a float.
        ValueError: wrong shapes, different devices, or spacing not finite and > 0.
    """
    check_spline_inputs(x, coefficients, spacing)
    return _OP(x, coefficients, float(spacing))
