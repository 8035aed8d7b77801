"""`shuffle_mix`: the soft channel shuffle of AutoShuffleNet, `y = M x` over channels, fused with
the l1-l2 penalty of M.

    y[:, i, ...] = sum_j M[i, j] * x[:, j, ...]        penalty = P(M)   (see `penalty.py`)

Autograd (one fused backward): with dY the gradient of y and g that of the penalty,

    dX = M^T dY        dM = sum over batch and pixels of dY X^T  +  g * dP/dM,

so a loss `task + lambda * penalty` gets `lambda * dP/dM` added in the epilogue of the dM
reduction instead of a separate backward of the penalty.

Ops (`torch.ops.autoshuffle_ext.*`):

* `shuffle_mix_fwd(x, M) -> (y, penalty, row_norm, col_norm)`: differentiable in x and M; the
  l2 norms of M's rows and columns are outputs so that the backward reuses them.
* `shuffle_mix_bwd(dy, grad_p, x, M, row_norm, col_norm, need_dx, need_dm) -> (dx, dM)`; an
  output that is not needed is returned empty (shape [0]).
* `shuffle_mix(x, M) -> (y, penalty)`: composite over the two above.

Layouts: x is [N, C, ...] (>= 2 dims, channels in dim 1), any strides. y is channels-last when x's
channel stride is 1 (channels_last, channels_last_3d, or [N, C]), else contiguous. dtypes: x is
float16, bfloat16, float32 or float64; M has x's dtype, or is float32 with a float16/bfloat16 x
(the mixed precision rule: M is cast to x's dtype for the product, which accumulates in float32;
dM is accumulated in float32 and returned in M's dtype). penalty has M's dtype.

CPU: ATen GEMMs without copies for contiguous and channels-last inputs. CUDA: the Triton kernels of
`autoshuffle_ext.kernels.mixing` (one launch forward, one backward) for float16/bfloat16/float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import norm_dtype
from .penalty import penalty_grad_aten, penalty_norms_aten

__all__ = [
    "check_mix_inputs",
    "empty_mix_output",
    "mix_aten",
    "mix_is_channels_last",
    "shuffle_mix",
]

_HALF = (torch.float16, torch.bfloat16)


def check_mix_inputs(x: Tensor, M: Tensor) -> None:
    """Raises TypeError / ValueError unless (x, M) is a valid input of `shuffle_mix`."""
    for name, t in (("x", x), ("M", M)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape [N, C, ...] (>= 2 dims), got {tuple(x.shape)}")
    C = x.shape[1]
    if M.dim() != 2 or M.shape[0] != C or M.shape[1] != C:
        raise ValueError(
            f"M must have shape [C, C] = [{C}, {C}] (C = x.shape[1]), got {tuple(M.shape)}"
        )
    if not x.dtype.is_floating_point:
        raise TypeError(f"x must be a floating point tensor, got {x.dtype}")
    if M.dtype != x.dtype and not (M.dtype == torch.float32 and x.dtype in _HALF):
        raise TypeError(
            f"M must have x's dtype {x.dtype} (or float32 when x is float16/bfloat16), "
            f"got {M.dtype}"
        )
    if M.device != x.device:
        raise ValueError(f"M must be on x's device {x.device}, got {M.device}")


def mix_is_channels_last(x: Tensor) -> bool:
    """Whether shuffle_mix treats x as channels-last (channel stride 1): then y is channels-last."""
    return x.shape[1] > 1 and x.stride(1) == 1


def empty_mix_output(x: Tensor) -> Tensor:
    """An uninitialised y for x: channels-last when x is, else contiguous."""
    if mix_is_channels_last(x):
        return x.new_empty((x.shape[0], *x.shape[2:], x.shape[1])).movedim(-1, 1)
    return x.new_empty(x.shape)


def _rows(t: Tensor) -> Tensor:
    """A channels-last t as [N * pixels, C] (a view when t is dense in that order)."""
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _planes(t: Tensor) -> Tensor:
    """t as [N, C, pixels] (a view when the pixels of t are dense)."""
    return t.reshape(t.shape[0], t.shape[1], -1)


def mix_aten(x: Tensor, A: Tensor) -> Tensor:
    """y[:, i] = sum_j A[i, j] x[:, j]: one GEMM (channels-last) or a batched GEMM, no copies."""
    A = A.to(x.dtype)
    y = empty_mix_output(x)
    if x.numel() == 0:
        return y
    if mix_is_channels_last(x):
        torch.mm(_rows(x), A.t(), out=y.movedim(1, -1).view(-1, x.shape[1]))
    else:
        torch.matmul(A, _planes(x), out=y.view(y.shape[0], y.shape[1], -1))
    return y


# Below this many pixels per plane the NCHW weight gradient is one GEMM over copied rows.
SMALL_PLANE = 64


def mix_weight_grad_aten(dy: Tensor, x: Tensor) -> Tensor:
    """sum over batch and pixels of dy x^T ([C, C], float32 or float64)."""
    acc = norm_dtype(x.dtype)
    if x.numel() == 0:  # an empty batch: nothing to sum (and no pixel count to infer)
        return x.new_zeros(x.shape[1], x.shape[1], dtype=acc)
    if mix_is_channels_last(dy) and mix_is_channels_last(x):
        return torch.mm(_rows(dy).t(), _rows(x)).to(acc)
    dy_planes, x_planes = _planes(dy), _planes(x)
    if x_planes.shape[-1] < SMALL_PLANE:
        # N GEMMs with an inner dimension of only H * W run far below the BLAS rate (2.8x
        # slower at [32, 464, 4, 4]); one GEMM over [C, N * H * W] copies of both wins there.
        dy_rows = dy_planes.transpose(0, 1).reshape(dy.shape[1], -1)
        x_rows = x_planes.transpose(0, 1).reshape(x.shape[1], -1)
        return torch.mm(dy_rows, x_rows.t()).to(acc)
    dm = torch.matmul(dy_planes, x_planes.transpose(1, 2))  # [N, C, C]
    return dm.sum(0, dtype=acc)


# ---- ops ----

_TAGS = (torch.Tag.needs_fixed_stride_order,)  # y's layout follows x's strides


def _use_triton(x: Tensor) -> bool:
    from ..kernels import triton_available

    return triton_available() and x.dtype in (*_HALF, torch.float32) and x.shape[1] > 0


def _mix_fwd_aten(x: Tensor, M: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return (mix_aten(x, M), *penalty_norms_aten(M))


# Each op's CPU kernel is its ATen implementation, which CUDA falls back to where Triton does not
# apply.
_mix_fwd = torch.library.custom_op("autoshuffle_ext::shuffle_mix_fwd", mutates_args=(), tags=_TAGS)(
    _mix_fwd_aten
)


@_mix_fwd.register_kernel("cuda")
def _(x: Tensor, M: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    if not _use_triton(x):
        return _mix_fwd_aten(x, M)
    from ..kernels.mixing import shuffle_mix_forward

    return shuffle_mix_forward(x, M, empty_mix_output(x))


@_mix_fwd.register_fake
def _(x: Tensor, M: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = norm_dtype(M.dtype)
    C = M.shape[0]
    return (
        empty_mix_output(x),
        M.new_empty(()),
        M.new_empty(C, dtype=acc),
        M.new_empty(C, dtype=acc),
    )


def _mix_bwd_aten(
    dy: Tensor,
    grad_p: Tensor | None,
    x: Tensor,
    M: Tensor,
    row_norm: Tensor,
    col_norm: Tensor,
    need_dx: bool,
    need_dm: bool,
) -> tuple[Tensor, Tensor]:
    dx = mix_aten(dy, M.t()) if need_dx else x.new_empty(0)
    dm = M.new_empty(0)
    if need_dm:
        acc = mix_weight_grad_aten(dy, x).to(row_norm.dtype)
        if grad_p is not None:
            acc = acc + grad_p.to(acc.dtype) * penalty_grad_aten(M, row_norm, col_norm)
        dm = acc.to(M.dtype)
    return dx, dm


def _bwd_outputs(
    dy: Tensor, x: Tensor, M: Tensor, need_dx: bool, need_dm: bool
) -> tuple[Tensor, Tensor]:
    """Empty dX (dy's layout) and dM, or 0-element placeholders for the ones not needed."""
    dx = empty_mix_output(dy) if need_dx else x.new_empty(0)
    dm = M.new_empty(M.shape) if need_dm else M.new_empty(0)
    return dx, dm


_mix_bwd = torch.library.custom_op("autoshuffle_ext::shuffle_mix_bwd", mutates_args=(), tags=_TAGS)(
    _mix_bwd_aten
)


@_mix_bwd.register_kernel("cuda")
def _(
    dy: Tensor,
    grad_p: Tensor | None,
    x: Tensor,
    M: Tensor,
    row_norm: Tensor,
    col_norm: Tensor,
    need_dx: bool,
    need_dm: bool,
) -> tuple[Tensor, Tensor]:
    if not _use_triton(x):
        return _mix_bwd_aten(dy, grad_p, x, M, row_norm, col_norm, need_dx, need_dm)
    from ..kernels.mixing import shuffle_mix_backward

    dx, dm = _bwd_outputs(dy, x, M, need_dx, need_dm)
    shuffle_mix_backward(
        dy, grad_p, x, M, row_norm, col_norm, dx if need_dx else None, dm if need_dm else None
    )
    return dx, dm


@_mix_bwd.register_fake
def _(
    dy: Tensor,
    grad_p: Tensor | None,
    x: Tensor,
    M: Tensor,
    row_norm: Tensor,
    col_norm: Tensor,
    need_dx: bool,
    need_dm: bool,
) -> tuple[Tensor, Tensor]:
    return _bwd_outputs(dy, x, M, need_dx, need_dm)


def _setup_context(ctx, inputs, output) -> None:
    x, M = inputs
    _, _, row, col = output
    ctx.mark_non_differentiable(row, col)
    ctx.save_for_backward(x, M, row, col)


def _backward(ctx, dy: Tensor | None, grad_p: Tensor | None, _gr: Tensor, _gc: Tensor):
    x, M, row, col = ctx.saved_tensors
    need_dx, need_dm = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if dy is None:  # only the penalty is used
        dm = None
        if need_dm and grad_p is not None:
            dm = torch.ops.autoshuffle_ext.l1l2_penalty_bwd(grad_p, M, row, col)
        return None, dm
    dx, dm = _mix_bwd(dy, grad_p, x, M, row, col, need_dx, need_dm)
    return (dx if need_dx else None), (dm if need_dm else None)


_mix_fwd.register_autograd(_backward, setup_context=_setup_context)

_LIB = torch.library.Library("autoshuffle_ext", "FRAGMENT")
_LIB.define("shuffle_mix(Tensor x, Tensor M) -> (Tensor, Tensor)")


@torch.library.impl(_LIB, "shuffle_mix", "CompositeImplicitAutograd")
def _shuffle_mix(x: Tensor, M: Tensor) -> tuple[Tensor, Tensor]:
    y, penalty, _, _ = _mix_fwd(x, M)
    return y, penalty


def shuffle_mix(x: Tensor, M: Tensor) -> tuple[Tensor, Tensor]:
    """(y, P(M)): `y[:, i, ...] = sum_j M[i, j] * x[:, j, ...]` and the l1-l2 penalty of M.

    Args:
        x: [N, C, ...] (>= 2 dims), float16/bfloat16/float32/float64, any strides.
        M: [C, C], x's dtype (or float32 with a float16/bfloat16 x), on x's device.

    Returns:
        y with x's shape and dtype (channels-last when x is, else contiguous) and the 0-d penalty
        in M's dtype. Differentiable in x and M; a loss `... + lam * penalty` gets lam * dP/dM
        added to dM in the same backward kernel.

    Raises:
        TypeError: x or M is not a tensor, not floating point, or of a dtype not allowed above.
        ValueError: wrong shapes, or x and M on different devices.
    """
    check_mix_inputs(x, M)
    return torch.ops.autoshuffle_ext.shuffle_mix(x, M)
