"""`l1l2_penalty`: the exact Lipschitz continuous penalty of AutoShuffleNet (arXiv 1901.08624).

    P(M) = sum_i (|M[i,:]|_1 - |M[i,:]|_2) + sum_j (|M[:,j]|_1 - |M[:,j]|_2)

On doubly stochastic matrices P >= 0, with equality exactly at permutation matrices. It has the
closed-form (sub)gradient

    dP/dM[i,j] = 2 sign(M[i,j]) - M[i,j] / |M[i,:]|_2 - M[i,j] / |M[:,j]|_2,

with a zero row or column contributing 0 to the last two terms.

Ops (`torch.ops.autoshuffle_ext.*`):

* `l1l2_penalty_fwd(M) -> (P, row_norm, col_norm)`: the value and the l2 norms of the rows and
  columns, in one pass over M. Differentiable: the norms are saved, so the backward is one more
  pass over M (`l1l2_penalty_bwd`), never a recomputation of the norms.
* `l1l2_penalty_bwd(grad, M, row_norm, col_norm) -> grad[..., None, None] * dP/dM`.
* `l1l2_penalty(M) -> P` and `l1l2_penalty_grad(M) -> dP/dM`: composite ops over the two above.

M is [n, n] (P is 0-d) or [B, n, n] (P is [B]). The norms are float32 (float64 for a float64 M),
P and the gradient have M's dtype. CPU: ATen. CUDA: Triton kernels (`autoshuffle_ext.kernels
.penalty`) for float16/bfloat16/float32; float64 uses ATen there too.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..kernels import norm_dtype

__all__ = ["check_square", "l1l2_penalty", "l1l2_penalty_grad", "penalty_and_norms"]


def check_square(M: Tensor, name: str = "M") -> None:
    """Raises unless M is a floating tensor of shape [n, n] or [B, n, n]."""
    if not isinstance(M, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(M).__name__}")
    if M.dim() not in (2, 3) or M.shape[-1] != M.shape[-2]:
        raise ValueError(f"{name} must have shape [n, n] or [B, n, n], got {tuple(M.shape)}")
    if not M.dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating point tensor, got {M.dtype}")


def _use_triton(M: Tensor) -> bool:
    from ..kernels import triton_available

    return triton_available() and M.dtype in (torch.float16, torch.bfloat16, torch.float32)


# ---- ATen reference implementations (the CPU kernels, and CUDA's float64 path) ----


def penalty_norms_aten(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(P, row_norm, col_norm) of M [..., n, n] with ATen ops."""
    acc = norm_dtype(M.dtype)
    row = torch.linalg.vector_norm(M, dim=-1, dtype=acc)
    col = torch.linalg.vector_norm(M, dim=-2, dtype=acc)
    l1 = M.abs().sum(dim=(-2, -1), dtype=acc)
    value = 2 * l1 - row.sum(-1) - col.sum(-1)
    return value.to(M.dtype), row, col


def _safe_inverse(norm: Tensor) -> Tensor:
    return torch.where(norm > 0, norm.reciprocal(), torch.zeros_like(norm))


def penalty_grad_aten(M: Tensor, row_norm: Tensor, col_norm: Tensor) -> Tensor:
    """dP/dM from the saved norms, in the norms' dtype ([..., n, n])."""
    Ma = M.to(row_norm.dtype)
    inv = _safe_inverse(row_norm)[..., :, None] + _safe_inverse(col_norm)[..., None, :]
    return 2 * torch.sign(Ma) - Ma * inv


def _penalty_bwd_aten(grad: Tensor, M: Tensor, row_norm: Tensor, col_norm: Tensor) -> Tensor:
    """grad[..., None, None] * dP/dM from the saved norms, in M's dtype."""
    g = grad.to(row_norm.dtype)[..., None, None]
    return (g * penalty_grad_aten(M, row_norm, col_norm)).to(M.dtype)


# ---- ops ----
# Each op's CPU kernel is its ATen implementation, which CUDA falls back to where Triton does not
# apply.

_penalty_fwd = torch.library.custom_op("autoshuffle_ext::l1l2_penalty_fwd", mutates_args=())(
    penalty_norms_aten
)


@_penalty_fwd.register_kernel("cuda")
def _(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if not _use_triton(M):
        return penalty_norms_aten(M)
    from ..kernels.penalty import penalty_forward

    return penalty_forward(M)


@_penalty_fwd.register_fake
def _(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    acc = norm_dtype(M.dtype)
    return (
        M.new_empty(M.shape[:-2]),
        M.new_empty(M.shape[:-1], dtype=acc),
        M.new_empty(M.shape[:-1], dtype=acc),
    )


_penalty_bwd = torch.library.custom_op("autoshuffle_ext::l1l2_penalty_bwd", mutates_args=())(
    _penalty_bwd_aten
)


@_penalty_bwd.register_kernel("cuda")
def _(grad: Tensor, M: Tensor, row_norm: Tensor, col_norm: Tensor) -> Tensor:
    if not _use_triton(M):
        return _penalty_bwd_aten(grad, M, row_norm, col_norm)
    from ..kernels.penalty import penalty_backward

    return penalty_backward(grad, M, row_norm, col_norm)


@_penalty_bwd.register_fake
def _(grad: Tensor, M: Tensor, row_norm: Tensor, col_norm: Tensor) -> Tensor:
    return torch.empty_like(M, memory_format=torch.contiguous_format)


def _setup_context(ctx, inputs, output) -> None:
    _, row, col = output
    ctx.mark_non_differentiable(row, col)
    ctx.save_for_backward(inputs[0], row, col)


def _backward(ctx, grad: Tensor, _grad_row: Tensor, _grad_col: Tensor) -> Tensor:
    M, row, col = ctx.saved_tensors
    return _penalty_bwd(grad, M, row, col)


_penalty_fwd.register_autograd(_backward, setup_context=_setup_context)

_LIB = torch.library.Library("autoshuffle_ext", "FRAGMENT")
_LIB.define("l1l2_penalty(Tensor M) -> Tensor")
_LIB.define("l1l2_penalty_grad(Tensor M) -> Tensor")


# Composite: autograd, fake tensors, compile and export go through the two ops above.
@torch.library.impl(_LIB, "l1l2_penalty", "CompositeImplicitAutograd")
def _penalty(M: Tensor) -> Tensor:
    return _penalty_fwd(M)[0]


@torch.library.impl(_LIB, "l1l2_penalty_grad", "CompositeImplicitAutograd")
def _penalty_grad(M: Tensor) -> Tensor:
    value, row, col = _penalty_fwd(M.detach())
    return _penalty_bwd(torch.ones_like(value), M.detach(), row, col)


def penalty_and_norms(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(P(M), row_norm, col_norm): the penalty with the l2 norms it was computed from.

    Shapes: P is M.shape[:-2], the norms M.shape[:-1]. Differentiable in M (through P).

    Raises:
        TypeError: M is not a floating point tensor.
        ValueError: M is not of shape [n, n] or [B, n, n].
    """
    check_square(M)
    return _penalty_fwd(M)


def l1l2_penalty(M: Tensor) -> Tensor:
    """P(M) for M of shape [n, n] (returns a 0-d tensor) or [B, n, n] (returns [B]).

    Differentiable in M through the closed-form subgradient above.

    Raises:
        TypeError: M is not a floating point tensor.
        ValueError: M is not of shape [n, n] or [B, n, n].
    """
    check_square(M)
    return torch.ops.autoshuffle_ext.l1l2_penalty(M)


def l1l2_penalty_grad(M: Tensor) -> Tensor:
    """dP/dM, same shape and dtype as M (the closed form above, without autograd).

    Raises:
        TypeError: M is not a floating point tensor.
        ValueError: M is not of shape [n, n] or [B, n, n].
    """
    check_square(M)
    return torch.ops.autoshuffle_ext.l1l2_penalty_grad(M)
