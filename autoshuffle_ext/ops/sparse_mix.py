"""`sparse_mix`: the channel mixing of a learned shuffle once its matrix M is sparse.

The projection zeroes entries of M and the penalty drives M to a permutation, so late in training
each row and column of M has a few non-zeros. Then the product and the input gradient are sparse:

    y[:, i] = sum over M[i, j] != 0 of M[i, j] x[:, j]         (K_rows multiply-adds, not C)
    dX[:, j] = sum over M[i, j] != 0 of M[i, j] dY[:, i]       (K_cols)
    dM = sum over batch and pixels of dY X^T                   (dense)

The gradient of M stays dense: an entry at zero must be able to come back (the projection's
threshold lets it), and that takes its gradient.

Ops (`torch.ops.autoshuffle_ext.*`):

* `ell_mix(x, A, index) -> y`: the kernel, y[:, i] = sum_k A[i, index[i, k]] x[:, index[i, k]]
  with -1 entries of index skipped (`ell_reference.py`). CPU: the compiled library's C++ kernel
  (csrc/cpu/ell_mix.cpp, both layouts); CUDA: Triton (`autoshuffle_ext.kernels.ell_mix`) for
  float16/bfloat16/float32; elsewhere, and without the compiled library, the reference. Not
  differentiable itself.
* `ell_index(A) -> index`: the padded row lists of A's non-zeros (its width is data-dependent;
  C++ on the CPU, one pass and no sort; the reference `ell_reference.ell_index` elsewhere).
* `sparse_mix(x, M, rows, cols) -> (y, P(M))`: as `shuffle_mix`, differentiable in x and M,
  reverse and forward mode; `rows` = `ell_index(M)`, `cols` = `ell_index(M.t())` must list M's
  non-zeros (an entry left out counts as zero in y and dX, but not in dM). Its backward runs
  `sparse_mix_backward(dy, grad_p, x, M, cols, need_x, need_M) -> (dx, dM)` (an output not
  needed is empty, [0]); dM is the dense GEMM of `mixing.mix_weight_grad_aten` plus
  grad_p * dP/dM, as in `shuffle_mix`'s fused backward.

Layouts and dtypes as `shuffle_mix`: x is [N, C, ...]; y is channels-last when x's channel stride
is 1, else contiguous; x is float16/bfloat16/float32/float64 and M has x's dtype or is float32
with a half x (accumulation in float32, float64 for float64).

The penalty is computed beside the product (C x C work) so that the module makes one op call
per step on either path.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._extension import extension_available
from .ell_reference import ell_index, ell_mix_reference
from .mixing import check_mix_inputs, empty_mix_output, mix_aten, mix_weight_grad_aten
from .penalty import penalty_grad_aten, penalty_norms_aten

__all__ = ["ell_mix", "sparse_mix", "sparse_mix_index"]

_HALF = (torch.float16, torch.bfloat16)
_TAGS = (torch.Tag.needs_fixed_stride_order, torch.Tag.pt2_compliant_tag)


def _check_index(name: str, index: Tensor, x: Tensor) -> None:
    C = x.shape[1]
    if not isinstance(index, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(index).__name__}")
    if index.dim() != 2 or index.shape[0] != C or index.shape[1] < 1:
        raise ValueError(
            f"{name} must have shape [C, K] with C = x.shape[1] = {C} and K >= 1, "
            f"got {tuple(index.shape)}"
        )
    if index.dtype != torch.int64:
        raise TypeError(f"{name} must be int64, got {index.dtype}")
    if index.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}, got {index.device}")


def _ell_mix_cuda(x: Tensor, A: Tensor, index: Tensor) -> Tensor:
    C = x.shape[1]
    if index.numel() and not bool(((index >= -1) & (index < C)).all()):  # one host sync
        raise ValueError(f"ell_mix: index must hold columns in [0, {C}) or -1")
    from ..kernels import triton_available

    if x.dtype not in (*_HALF, torch.float32) or not triton_available():
        return _ell_mix_fallback(x, A, index)
    from ..kernels.ell_mix import ell_mix_forward

    out = empty_mix_output(x)
    if _pixels_merge(x) and _pixels_merge(out):
        return ell_mix_forward(x, A, index, out)
    src = x.movedim(1, -1).contiguous().movedim(-1, 1) if x.stride(1) == 1 else x.contiguous()
    return ell_mix_forward(src, A, index, out)


def _pixels_merge(t: Tensor) -> bool:
    """Whether t's pixels are one stride (contiguous or channels-last dense)."""
    if t.stride(1) == 1 and t.shape[1] > 1:
        return t.movedim(1, -1).is_contiguous()
    return t.is_contiguous()


def _ell_mix_fallback(x: Tensor, A: Tensor, index: Tensor) -> Tensor:
    """The reference, in the op's output layout (the CPU kernel without the compiled library;
    on CUDA for float64 or without Triton)."""
    y = empty_mix_output(x)
    return y.copy_(ell_mix_reference(x, A, index))


_LIB = torch.library.Library("autoshuffle_ext", "FRAGMENT")
if not extension_available():
    _LIB.define("ell_mix(Tensor x, Tensor A, Tensor index) -> Tensor", tags=_TAGS)
    _LIB.impl("ell_mix", _ell_mix_fallback, "CPU")
_LIB.impl("ell_mix", _ell_mix_cuda, "CUDA")


@torch.library.register_fake("autoshuffle_ext::ell_mix")
def _(x: Tensor, A: Tensor, index: Tensor) -> Tensor:
    check_mix_inputs(x, A)
    _check_index("index", index, x)
    return empty_mix_output(x)


def ell_mix(x: Tensor, A: Tensor, index: Tensor) -> Tensor:
    """y[:, i] = sum_k A[i, index[i, k]] x[:, index[i, k]] (index -1 skipped): the kernel.

    Args:
        x: [N, C, ...], float16/bfloat16/float32/float64, any strides.
        A: [C, C], x's dtype (or float32 with a half x), any strides (e.g. `M.t()`).
        index: int64 [C, K], K >= 1: columns of A per row, -1 for none.

    Returns:
        y, x's shape and dtype (channels-last when x's channel stride is 1, else contiguous).

    Raises:
        TypeError / ValueError: bad shapes, dtypes, devices, or index values outside [-1, C).
    """
    check_mix_inputs(x, A)
    _check_index("index", index, x)
    return torch.ops.autoshuffle_ext.ell_mix(x, A, index)


# ---- ell_index: the sparse form, one pass over M ----


if not extension_available():
    _LIB.define("ell_index(Tensor A) -> Tensor", tags=(torch.Tag.pt2_compliant_tag,))
    _LIB.impl("ell_index", ell_index, "CPU")  # the reference
_LIB.impl("ell_index", ell_index, "CUDA")


@torch.library.register_fake("autoshuffle_ext::ell_index")
def _(A: Tensor) -> Tensor:
    width = torch.library.get_ctx().new_dynamic_size(min=1)  # the most non-zeros of a row
    return A.new_empty((A.shape[0], width), dtype=torch.int64)


def sparse_mix_index(M: Tensor) -> tuple[Tensor, Tensor]:
    """(rows, cols) of `sparse_mix`: the padded non-zero lists of M's rows and of its columns
    (`ell_index` of M and of M^T; one pass over M each on the CPU, no sort)."""
    M = M.detach()  # an integer result: no gradient, and no dual number in forward mode
    return torch.ops.autoshuffle_ext.ell_index(M), torch.ops.autoshuffle_ext.ell_index(M.t())


# ---- sparse_mix: the differentiable op over ell_mix, with the penalty ----

_LIB.define(
    "sparse_mix(Tensor x, Tensor M, Tensor rows, Tensor cols) -> (Tensor, Tensor)", tags=_TAGS
)
_LIB.define(
    "sparse_mix_backward(Tensor dy, Tensor? grad_p, Tensor x, Tensor M, Tensor cols, "
    "bool need_x, bool need_M) -> (Tensor, Tensor)",
    tags=_TAGS,
)


def _sparse_mix_kernel(x: Tensor, M: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    return torch.ops.autoshuffle_ext.ell_mix(x, M, rows), penalty_norms_aten(M)[0]


def _penalty_term(grad_p: Tensor, M: Tensor) -> Tensor:
    """grad_p * dP/dM, in the accumulation dtype."""
    _, row, col = penalty_norms_aten(M)
    return grad_p.to(row.dtype) * penalty_grad_aten(M, row, col)


def _sparse_mix_backward_kernel(
    dy: Tensor,
    grad_p: Tensor | None,
    x: Tensor,
    M: Tensor,
    cols: Tensor,
    need_x: bool,
    need_M: bool,
) -> tuple[Tensor, Tensor]:
    dx = torch.ops.autoshuffle_ext.ell_mix(dy, M.t(), cols) if need_x else x.new_empty(0)
    dm = M.new_empty(0)
    if need_M:
        acc = mix_weight_grad_aten(dy, x)
        if grad_p is not None:
            acc = acc + _penalty_term(grad_p, M)
        dm = acc.to(M.dtype)
    return dx, dm


for _device in ("CPU", "CUDA"):
    _LIB.impl("sparse_mix", _sparse_mix_kernel, _device)
    _LIB.impl("sparse_mix_backward", _sparse_mix_backward_kernel, _device)


@torch.library.register_fake("autoshuffle_ext::sparse_mix")
def _(x: Tensor, M: Tensor, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    return empty_mix_output(x), M.new_empty(())


@torch.library.register_fake("autoshuffle_ext::sparse_mix_backward")
def _(
    dy: Tensor,
    grad_p: Tensor | None,
    x: Tensor,
    M: Tensor,
    cols: Tensor,
    need_x: bool,
    need_M: bool,
) -> tuple[Tensor, Tensor]:
    dx = empty_mix_output(dy) if need_x else x.new_empty(0)
    dm = M.new_empty(M.shape) if need_M else M.new_empty(0)
    return dx, dm


def _no_double_backward(ctx, *grads):
    raise NotImplementedError("sparse_mix_backward is not differentiable (no double backward)")


def _keep_nothing(ctx, inputs, output) -> None:
    pass


torch.library.register_autograd(
    "autoshuffle_ext::sparse_mix_backward", _no_double_backward, setup_context=_keep_nothing
)

_OP = torch.ops.autoshuffle_ext.sparse_mix.default
_backward_op = torch.ops.autoshuffle_ext.sparse_mix_backward.default


class _SparseMixFunction(torch.autograd.Function):
    """(y, P(M)) = (M x, P(M)): reverse mode (dX sparse; dM dense, with the penalty's term) and
    forward mode (y' = M x' + M' x, P' = <dP/dM, M'>)."""

    @staticmethod
    def forward(x: Tensor, M: Tensor, rows: Tensor, cols: Tensor, keyset):
        with torch._C._AutoDispatchBelowAutograd():
            return _OP.redispatch(keyset & torch._C._after_autograd_keyset, x, M, rows, cols)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, M, rows, cols, _ = inputs
        ctx.save_for_backward(x, M, rows, cols)
        ctx.save_for_forward(x, M, rows, cols)

    @staticmethod
    def backward(ctx, dy: Tensor | None, grad_p: Tensor | None):
        x, M, _, cols = ctx.saved_tensors
        need_x, need_M = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if dy is None:  # only the penalty is used
            dm = _penalty_term(grad_p, M).to(M.dtype) if need_M and grad_p is not None else None
            return None, dm, None, None, None
        dx, dm = _backward_op(dy, grad_p, x, M, cols, need_x, need_M)
        return (dx if need_x else None), (dm if need_M else None), None, None, None

    @staticmethod
    def jvp(ctx, x_t, M_t, _rows_t, _cols_t, _keyset_t):
        x, M, rows, cols = ctx.saved_tensors
        y_t = torch.zeros_like(empty_mix_output(x))
        p_t = M.new_zeros(())
        if x_t is not None:  # M fixed: the tangent of x mixes through M's sparsity
            y_t = y_t + _OP(x_t.to(x.dtype), M, rows, cols)[0]
        if M_t is not None:  # a tangent of M is dense
            y_t = y_t + mix_aten(x, M_t.to(M.dtype))
            p_t = (_penalty_term(M.new_ones(()), M) * M_t).sum().to(M.dtype)
        return y_t, p_t


def _autograd_kernel(keyset, x: Tensor, M: Tensor, rows: Tensor, cols: Tensor):
    return _SparseMixFunction.apply(x, M, rows, cols, keyset)


_LIB.impl("sparse_mix", _autograd_kernel, "Autograd", with_keyset=True)


def sparse_mix(
    x: Tensor, M: Tensor, rows: Tensor | None = None, cols: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """(y, P(M)) as `shuffle_mix`, `y[:, i, ...] = sum_j M[i, j] * x[:, j, ...]`, through the
    non-zeros of M only (dM stays dense).

    Args:
        x: [N, C, ...] (>= 2 dims), float16/bfloat16/float32/float64, any strides.
        M: [C, C], x's dtype (or float32 with a half x), on x's device.
        rows, cols: `sparse_mix_index(M)`; computed here when not given (a module that calls
            this each step with an unchanged M can keep them).

    Returns:
        y with x's shape and dtype (channels-last when x's channel stride is 1, else contiguous)
        and the 0-d penalty in M's dtype; differentiable in x and M in reverse and forward mode.
        Equal to `shuffle_mix(x, M)` up to the order of the float additions (y is exact when M
        is a permutation matrix).

    Raises:
        TypeError / ValueError: bad shapes, dtypes or devices (as `shuffle_mix`), or rows/cols
            that are not int64 [C, K] on x's device.
    """
    check_mix_inputs(x, M)
    if rows is None or cols is None:
        rows, cols = sparse_mix_index(M)
    _check_index("rows", rows, x)
    _check_index("cols", cols, x)
    return _OP(x, M, rows, cols)
