"""Triton kernel of the sparse channel mixing: y = A x over channels, A read through a row list.

A late doubly stochastic M has a few non-zeros per row. Its padded row list ("ELL", see
`autoshuffle_ext.ops.ell_reference`) is `index` [C, K] int64: `index[i, k]` is the column of the
k-th non-zero of row i, or -1 past the row's last one. The kernel computes

    y[n, i, p] = sum_k A[i, index[i, k]] * x[n, index[i, k], p]      (index[i, k] >= 0)

reading the values from the dense A [C, C] through its strides (A = M for the forward, the
transposed view A = M.t() with M^T's row list for the input gradient: no copy either way).

Every tensor is addressed as [N, C, P] (batch, channel, pixel) through its strides, as in
`mixing.py`: contiguous and channels-last inputs take the same kernel without a copy, and when
the batch merges with the pixels (channels-last, one image) the launcher folds it in.

Tiling: one program per (image, block of BLOCK_C output channels, block of BLOCK_P pixels). It
walks k < K: loads index[i, k] for its channels (-1 masks the row out of this step), gathers the
weights A[i, index[i, k]] and the [BLOCK_C, BLOCK_P] tile of input rows x[n, index[i, k], pixels],
and accumulates weight * x in float32; the tile is stored once, in y's dtype. Channel blocks are
the fastest program index, so that the programs gathering from the same pixels run together
(L2 reuse of x). The gathered rows are data dependent, so the compiler cannot see contiguity
along the channels; the tile is therefore laid out by the layout (constexpr CHANNELS_INNER):
[BLOCK_C, BLOCK_P] with the pixels as the inner (fastest) dim for contiguous inputs, where each
gathered row is a contiguous run of pixels; [BLOCK_P, BLOCK_C] with the channels inner for
channels-last inputs, where the threads of a warp read neighbouring entries of one pixel's
channel vector (a few sectors for the whole gather), and the launcher then takes as many of the
channels as it can into one program.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import tile_of

__all__ = ["ell_mix_forward"]


# K (the row list's width) is never specialised by value: one compiled kernel serves K = 1 (a
# permutation) and every other width.
@triton.jit(do_not_specialize=["K"])
def _ell_mix_kernel(
    x_ptr,
    a_ptr,
    index_ptr,
    y_ptr,
    C,
    P,
    K,
    sx_n,
    sx_c,
    sx_p,
    sy_n,
    sy_c,
    sy_p,
    sa_r,
    sa_c,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    CHANNELS_INNER: tl.constexpr,
):
    n, ch, pix = tile_of(tl.program_id(0), C, P, BLOCK_C, BLOCK_P)
    ch_ok = ch < C
    pix_ok = pix < P
    ch64 = ch.to(tl.int64)
    # Channels and pixels as 2-D operands of the tile, in the orientation of the layout.
    if CHANNELS_INNER:
        pix2 = pix[:, None]
        pix_ok2 = pix_ok[:, None]
        acc = tl.zeros((BLOCK_P, BLOCK_C), dtype=tl.float32)
    else:
        pix2 = pix[None, :]
        pix_ok2 = pix_ok[None, :]
        acc = tl.zeros((BLOCK_C, BLOCK_P), dtype=tl.float32)
    x_base = x_ptr + n * sx_n + pix2 * sx_p
    index_row = index_ptr + ch64 * K
    a_row = a_ptr + ch64 * sa_r
    for k in range(0, K):
        j = tl.load(index_row + k, mask=ch_ok, other=-1)
        valid = j >= 0
        w = tl.load(a_row + j * sa_c, mask=valid, other=0.0).to(tl.float32)
        if CHANNELS_INNER:
            xt = tl.load(x_base + j[None, :] * sx_c, mask=valid[None, :] & pix_ok2, other=0.0)
            acc += w[None, :] * xt.to(tl.float32)
        else:
            xt = tl.load(x_base + j[:, None] * sx_c, mask=valid[:, None] & pix_ok2, other=0.0)
            acc += w[:, None] * xt.to(tl.float32)
    if CHANNELS_INNER:
        y_ptrs = y_ptr + n * sy_n + ch64[None, :] * sy_c + pix2 * sy_p
        mask = ch_ok[None, :] & pix_ok2
    else:
        y_ptrs = y_ptr + n * sy_n + ch64[:, None] * sy_c + pix2 * sy_p
        mask = ch_ok[:, None] & pix_ok2
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


# ---- launcher ----


def _ncp(tensors: list[torch.Tensor]) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(N, P, [(s_n, s_c, s_p)]) addressing each [N, C, ...] tensor as [N, C, P]; the batch is
    folded into the pixels when every tensor allows it. Raises ValueError when a tensor's pixel
    dims do not merge into one stride (neither contiguous nor channels-last)."""
    shape = tensors[0].shape
    N, C = shape[0], shape[1]
    P = 1
    for s in shape[2:]:
        P *= s
    strides = []
    for name, t in zip(("x", "out"), tensors, strict=True):
        try:
            strides.append(t.view(N, C, P).stride())
        except RuntimeError:
            raise ValueError(
                f"ell_mix_forward: the pixel dims of {name} must merge into one stride "
                f"(contiguous or channels-last), got strides {tuple(t.stride())} for shape "
                f"{tuple(t.shape)}"
            ) from None
    if N == 1 or P == 1 or all(sn == P * sp for sn, _, sp in strides):
        strides = [(0, sc, sp if P > 1 else sn) for sn, sc, sp in strides]
        return 1, N * P, strides
    return N, P, strides


# Elements per tile: 4 warps, 8 float32 accumulators a thread.
_ELEMS = 1024


def ell_tile(C: int, P: int, channels_inner: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P), BLOCK_C * BLOCK_P = 1024, from the inner (stride-1) dim's size alone,
    so that few configurations are compiled (four per layout and dtype pair). Channels inner: all
    of C up to 128 channels (at least 16) in one program, the rest in pixels. Pixels inner: runs
    of up to 128 pixels (at least 16; 256 bytes of float16 per gathered row), the rest in
    channels."""
    if channels_inner:
        block_c = min(max(triton.next_power_of_2(max(C, 1)), 16), 128)
        return block_c, _ELEMS // block_c
    block_p = min(max(triton.next_power_of_2(max(P, 1)), 16), 128)
    return _ELEMS // block_p, block_p


def channels_inner(x: torch.Tensor) -> bool:
    """Whether x's channels are its stride-1 dim (channels-last, or [N, C] rows)."""
    return x.shape[1] > 1 and x.stride(1) == 1


def ell_mix_forward(
    x: torch.Tensor,
    A: torch.Tensor,
    index: torch.Tensor,
    out: torch.Tensor,
    *,
    tile: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Fills `out` with y[:, i] = sum_k A[i, index[i, k]] x[:, index[i, k]] (index -1 skipped)
    and returns it; one launch, float32 accumulation, stored in out's dtype.

    x: [N, C, ...] (>= 2 dims) float16/bfloat16/float32, its pixel dims merging into one stride
    (contiguous or channels-last). A: [C, C], float32 or x's dtype, any strides (a transposed
    view is read as it is). index: int64 [C, K], contiguous, -1 padded. out: x's shape, any
    layout whose pixel dims merge. `tile` overrides (BLOCK_C, BLOCK_P). Raises ValueError on a
    shape, dtype or layout that the kernel cannot address.
    """
    if x.dim() < 2:
        raise ValueError(f"ell_mix_forward: x must be [N, C, ...], got shape {tuple(x.shape)}")
    C = x.shape[1]
    if A.shape != (C, C):
        raise ValueError(f"ell_mix_forward: A must be [{C}, {C}], got {tuple(A.shape)}")
    if index.dim() != 2 or index.shape[0] != C or index.dtype != torch.int64:
        raise ValueError(f"ell_mix_forward: index must be int64 [{C}, K], got {index.dtype} "
                         f"{tuple(index.shape)}")  # fmt: skip
    if not index.is_contiguous():
        raise ValueError("ell_mix_forward: index must be contiguous")
    if out.shape != x.shape:
        raise ValueError(f"ell_mix_forward: out must have x's shape {tuple(x.shape)}, got "
                         f"{tuple(out.shape)}")  # fmt: skip
    K = index.shape[1]
    N, P, ((sx_n, sx_c, sx_p), (sy_n, sy_c, sy_p)) = _ncp([x, out])
    if N * C * P == 0:
        return out
    inner = channels_inner(x)
    block_c, block_p = tile or ell_tile(C, P, inner)
    grid = (triton.cdiv(C, block_c) * triton.cdiv(P, block_p) * N,)
    _ell_mix_kernel[grid](
        x, A, index, out, C, P, K, sx_n, sx_c, sx_p, sy_n, sy_c, sy_p, *A.stride(),
        BLOCK_C=block_c, BLOCK_P=block_p, CHANNELS_INNER=inner, num_warps=4,
    )  # fmt: skip
    return out
