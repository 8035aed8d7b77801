"""Triton kernels of `spline_activation`: one linear spline per channel on a uniform grid.

Channel c's spline has K knot values coefficients[c, 0..K-1] at positions (k - K // 2) * T and
is linear outside the grid with its end slopes. For an input x, with u = x / T:

    i = clamp(floor(u), -(K // 2), K - 2 - K // 2)      j = i + K // 2  (left knot, 0..K-2)
    t = u - i                                            (in [0, 1) inside, beyond it outside)
    y = c[j] + t * (c[j + 1] - c[j])

so one formula covers the grid and both linear extensions. Every tensor is addressed as
[N, C, P] (batch, channel, pixel) through its strides, as in `mixing.py`: contiguous and
channels-last inputs take the same kernels without a copy, and when the batch merges with the
pixels (channels-last, one image) the launcher folds it in. Tiles are [BLOCK_C, BLOCK_P]
(channels x pixels); the launcher shapes them by the layout so that loads are coalesced.

Forward: one program per tile, y = the formula above (float32 arithmetic, coefficients read
through the cache; they are C * K values).

Backward, one launch: program (channel block, split) walks its share of the (image, pixel
block) steps of its channels. Per element it stores dx = dy * (c[j + 1] - c[j]) / T and adds
(1 - t) dy to bin j and t dy to bin j + 1 of its channel's coefficient gradient. The bins of a
tile are summed in the program (a one-hot [BLOCK_C, BLOCK_P, BLOCK_K] reduction over the
pixels: no atomics, no collisions however concentrated the inputs are), kept in registers over
the steps, and flushed once: each split stores its [BLOCK_C, K] partial into a float32 workspace
[splits, C, K] that the launcher sums in split order (deterministic).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .tiles import tile_of

__all__ = ["spline_backward", "spline_forward"]


@triton.jit
def spline_segment(xv, spacing, K):
    """(j, t) of the formula in the module docstring, for float32 xv; NaN-safe: j is always a
    valid left knot (a NaN input gives t = NaN, hence a NaN output)."""
    half = K // 2
    u = xv / spacing
    fl = tl.minimum(tl.maximum(tl.floor(u), -half), K - 2 - half)
    j = fl.to(tl.int32) + half
    j = tl.minimum(tl.maximum(j, 0), K - 2)
    return j, u - fl


@triton.jit
def _spline_fwd_kernel(
    x_ptr,
    c_ptr,
    y_ptr,
    C,
    P,
    K,
    spacing,
    sx_n,
    sx_c,
    sx_p,
    sy_n,
    sy_c,
    sy_p,
    sc_c,
    sc_k,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    n, ch, pix = tile_of(tl.program_id(0), C, P, BLOCK_C, BLOCK_P)
    ch_ok = ch < C
    mask = ch_ok[:, None] & (pix < P)[None, :]
    ch64 = ch[:, None].to(tl.int64)
    xv = tl.load(x_ptr + n * sx_n + ch64 * sx_c + pix[None, :] * sx_p, mask=mask, other=0.0)
    j, t = spline_segment(xv.to(tl.float32), spacing, K)
    c_row = c_ptr + ch64 * sc_c
    left = tl.load(c_row + j * sc_k, mask=mask, other=0.0).to(tl.float32)
    right = tl.load(c_row + (j + 1) * sc_k, mask=mask, other=0.0).to(tl.float32)
    y = left + t * (right - left)
    y_ptrs = y_ptr + n * sy_n + ch64 * sy_c + pix[None, :] * sy_p
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


# need_dx and need_dc are run-time flags: one compiled kernel serves every case.
@triton.jit(do_not_specialize=["need_dx", "need_dc"])
def _spline_bwd_kernel(
    dy_ptr,
    x_ptr,
    c_ptr,
    dx_ptr,
    ws_ptr,
    N,
    C,
    P,
    K,
    spacing,
    sd_n,
    sd_c,
    sd_p,
    sx_n,
    sx_c,
    sx_p,
    sdx_n,
    sdx_c,
    sdx_p,
    sc_c,
    sc_k,
    num_splits,
    need_dx,
    need_dc,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_cb = tl.cdiv(C, BLOCK_C)
    cb = pid % num_cb
    split = pid // num_cb
    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < C
    ch64 = ch[:, None].to(tl.int64)
    c_row = c_ptr + ch64 * sc_c
    bins = tl.arange(0, BLOCK_K)
    num_pb = tl.cdiv(P, BLOCK_P)
    steps = N * num_pb
    per_split = tl.cdiv(steps, num_splits)
    acc = tl.zeros((BLOCK_C, BLOCK_K), dtype=tl.float32)
    for s in range(split * per_split, tl.minimum(steps, (split + 1) * per_split)):
        n = (s // num_pb).to(tl.int64)
        pix = (s % num_pb).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask = ch_ok[:, None] & (pix < P)[None, :]
        xv = tl.load(x_ptr + n * sx_n + ch64 * sx_c + pix[None, :] * sx_p, mask=mask, other=0.0)
        g = tl.load(dy_ptr + n * sd_n + ch64 * sd_c + pix[None, :] * sd_p, mask=mask, other=0.0)
        g = g.to(tl.float32)
        j, t = spline_segment(xv.to(tl.float32), spacing, K)
        if need_dx:
            left = tl.load(c_row + j * sc_k, mask=mask, other=0.0).to(tl.float32)
            right = tl.load(c_row + (j + 1) * sc_k, mask=mask, other=0.0).to(tl.float32)
            dx = g * ((right - left) / spacing)
            dx_ptrs = dx_ptr + n * sdx_n + ch64 * sdx_c + pix[None, :] * sdx_p
            tl.store(dx_ptrs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        if need_dc:
            w_right = t * g  # masked elements have g = 0: they add nothing
            w_left = g - w_right
            hit = j[:, :, None] == bins[None, None, :]
            hit_next = (j + 1)[:, :, None] == bins[None, None, :]
            contrib = tl.where(hit, w_left[:, :, None], 0.0) + tl.where(
                hit_next, w_right[:, :, None], 0.0
            )
            acc += tl.sum(contrib, axis=1)
    if need_dc:
        ws_ptrs = ws_ptr + (split.to(tl.int64) * C + ch64) * K + bins[None, :]
        tl.store(ws_ptrs, acc, mask=ch_ok[:, None] & (bins < K)[None, :])


# ---- launchers ----


def _ncp(tensors: list[torch.Tensor]) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(N, P, [(s_n, s_c, s_p)]) addressing each [N, C, ...] tensor (views of [N, C, P]) as
    [N, C, P]; the batch is folded into the pixels when every tensor allows it."""
    shape = tensors[0].shape
    N, C = shape[0], shape[1]
    P = 1
    for s in shape[2:]:
        P *= s
    strides = [t.view(N, C, P).stride() for t in tensors]
    if N == 1 or P == 1 or all(sn == P * sp for sn, _, sp in strides):
        strides = [(0, sc, sp if P > 1 else sn) for sn, sc, sp in strides]
        return 1, N * P, strides
    return N, P, strides


def _tile(C: int, P: int, channels_inner: bool, elems: int, max_c: int) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P) with BLOCK_C * BLOCK_P <= elems: along the channels first when they
    are the inner (stride-1) dim, along the pixels first otherwise."""
    c2, p2 = triton.next_power_of_2(max(C, 1)), triton.next_power_of_2(max(P, 1))
    if channels_inner:
        block_c = min(c2, elems, max_c)
        return block_c, min(p2, max(elems // block_c, 1))
    block_p = min(p2, elems)
    return min(c2, max(elems // block_p, 1), max_c), block_p


def _channels_inner(t: torch.Tensor) -> bool:
    return t.shape[1] > 1 and t.stride(1) == 1


# Elements per forward tile; per backward step the one-hot bins of a tile take
# BLOCK_C * BLOCK_P * BLOCK_K <= _BWD_CELLS values.
_FWD_ELEMS = 1024
_FWD_MAX_C = 64
_BWD_CELLS = 8192
_BWD_MAX_C = 32


# The largest K the kernels take (BLOCK_K <= 256); the op runs larger grids in ATen.
MAX_KNOTS = 256


def bin_block(K: int) -> int:
    """BLOCK_K: the bins (knots) of one channel, a power of two >= K and >= 32 (few distinct
    configurations to compile: 32, 64, 128, 256)."""
    return max(triton.next_power_of_2(K), 32)


def bwd_tile(C: int, P: int, K: int, channels_inner: bool) -> tuple[int, int]:
    """(BLOCK_C, BLOCK_P) of a backward step. From 128 knots on at most 8 channels per tile: a
    [32, 2, 128] tile spills 12-24 bytes on sm_80/sm_90 even at 8 warps."""
    block_k = bin_block(K)
    elems = min(max(_BWD_CELLS // block_k, 32), 256)
    return _tile(C, P, channels_inner, elems, _BWD_MAX_C if block_k <= 64 else 8)


def bwd_warps(K: int) -> int:
    """Warps of the backward. At 4 warps the one-hot bins of 128 knots and more need 255
    registers per thread and spill 20 bytes on sm_80 (half inputs, tests/test_triton_compile.py);
    8 warps halve each thread's share."""
    return 8 if bin_block(K) >= 128 else 4


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # the interpreter: a few splits, to exercise the split path


def spline_forward(
    x: torch.Tensor,
    coefficients: torch.Tensor,
    spacing: float,
    y: torch.Tensor,
    *,
    tile: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Fills y (x's shape, any layout whose pixel dims merge into one) with the splines of
    `coefficients` [C, K] (float32, K <= MAX_KNOTS) on x [N, C, ...] (a view of [N, C, P]);
    returns y. `tile` overrides (BLOCK_C, BLOCK_P)."""
    C, K = coefficients.shape
    N, P, ((sx_n, sx_c, sx_p), (sy_n, sy_c, sy_p)) = _ncp([x, y])
    if N * C * P == 0:
        return y
    block_c, block_p = tile or _tile(C, P, _channels_inner(x), _FWD_ELEMS, _FWD_MAX_C)
    grid = (triton.cdiv(C, block_c) * triton.cdiv(P, block_p) * N,)
    _spline_fwd_kernel[grid](
        x, coefficients, y, C, P, K, float(spacing), sx_n, sx_c, sx_p, sy_n, sy_c, sy_p,
        *coefficients.stride(), BLOCK_C=block_c, BLOCK_P=block_p, num_warps=4,
    )  # fmt: skip
    return y


def spline_backward(
    dy: torch.Tensor,
    x: torch.Tensor,
    coefficients: torch.Tensor,
    spacing: float,
    dx: torch.Tensor | None,
    need_dc: bool,
    *,
    tile: tuple[int, int] | None = None,
    num_splits: int | None = None,
) -> torch.Tensor | None:
    """Fills dx (when given) with dy * the slope of x's segment, and returns the coefficient
    gradient ([C, K] float32) when `need_dc`, else None; one launch. dy, x and dx are views of
    [N, C, P] with x's shape. `tile` overrides (BLOCK_C, BLOCK_P), `num_splits` the number of
    programs per channel block (the split of the reduction over the batch and pixels)."""
    if dy.shape != x.shape:
        raise ValueError(f"dy must have x's shape {tuple(x.shape)}, got {tuple(dy.shape)}")
    C, K = coefficients.shape
    N, P, strides = _ncp([dy, x, dx if dx is not None else dy])
    (sd_n, sd_c, sd_p), (sx_n, sx_c, sx_p), (sdx_n, sdx_c, sdx_p) = strides
    block_c, block_p = tile or bwd_tile(C, P, K, _channels_inner(x))
    num_cb = triton.cdiv(C, block_c)
    steps = N * triton.cdiv(P, block_p)
    if num_splits is None:  # fill the machine: ~4 programs per SM
        num_splits = min(max(4 * _num_sms(x.device) // max(num_cb, 1), 1), max(steps, 1), 256)
    num_splits = max(1, min(num_splits, max(steps, 1)))
    ws = torch.zeros((num_splits, C, K) if need_dc else (1,), device=x.device,
                     dtype=torch.float32)  # fmt: skip
    if C == 0 or steps == 0 or (dx is None and not need_dc):
        return ws.sum(0) if need_dc else None
    _spline_bwd_kernel[(num_cb * num_splits,)](
        dy, x, coefficients, dx if dx is not None else dy, ws, N, C, P, K, float(spacing),
        sd_n, sd_c, sd_p, sx_n, sx_c, sx_p, sdx_n, sdx_c, sdx_p, *coefficients.stride(),
        num_splits, int(dx is not None), int(need_dc), BLOCK_C=block_c, BLOCK_P=block_p,
        BLOCK_K=bin_block(K), num_warps=bwd_warps(K),
    )  # fmt: skip
    if not need_dc:
        return None
    return ws[0] if num_splits == 1 else ws.sum(0)
