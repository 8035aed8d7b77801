"""Triton kernels of `shuffle_mix`: y = M x over channels, fused with the l1-l2 penalty of M.

Every tensor is addressed as [N, C, P] (batch, channel, pixel) through its strides, so contiguous
(NCHW) and channels-last inputs take the same kernels with no copy; when the batch and pixel dims
merge (channels-last, or one image) the launcher folds them into one pixel dim so that no tile is
wasted on a small H*W. Offsets are 64-bit: tensors may exceed 2**31 elements.

Forward, one launch with two kinds of programs: the first `num_rb` programs run the penalty
forward of `penalty.py` on M (norms + value, the last one finishing), the others each compute a
[BLOCK_M, BLOCK_Q] tile of y = M x with a K loop over the input channels (tl.dot, fp32 acc).

Backward, one launch, again two kinds of programs:
* dM programs: a [BLOCK_D, BLOCK_D] tile of dM = sum over (n, p) of dY X^T, split-K over the
  N * P pixels. Each split stores its fp32 partial tile; the last split of a tile (counter,
  acq_rel) sums the partials in split order (deterministic), adds g * dP/dM from the saved norms
  (the penalty epilogue) and stores dM in M's dtype. dY and X are each read once here.
* dX programs: tiles of dX = M^T dY, the forward tile with M's strides swapped.

dtypes: the product runs in x's dtype (M is cast to it) with fp32 accumulation; fp32 inputs use
TF32 only when torch.get_float32_matmul_precision() allows it, like torch.matmul.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import norm_dtype
from .penalty import norm_blocks, penalty_grad_tile, penalty_program, penalty_workspace
from .tiles import tile_of

__all__ = ["shuffle_mix_backward", "shuffle_mix_forward"]


@triton.jit
def mix_tile(
    pid,
    a_ptr,
    sa_r,
    sa_c,
    x_ptr,
    sx_n,
    sx_c,
    sx_p,
    y_ptr,
    sy_n,
    sy_c,
    sy_p,
    C,
    P,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Tile `pid` of y[n, i, p] = sum_k A[i, k] x[n, k, p]; pid -> (row block, pixel block, n),
    row blocks fastest so that the programs sharing an x tile run together (L2 reuse)."""
    n, rows, pix = tile_of(pid, C, P, BLOCK_M, BLOCK_Q)
    row_ok = rows < C
    pix_ok = pix < P
    x_base = x_ptr + n * sx_n + pix[None, :] * sx_p
    acc = tl.zeros((BLOCK_M, BLOCK_Q), dtype=tl.float32)
    for k0 in range(0, C, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < C
        a = tl.load(
            a_ptr + rows[:, None] * sa_r + ks[None, :] * sa_c,
            mask=row_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        xt = tl.load(
            x_base + ks[:, None].to(tl.int64) * sx_c,
            mask=k_ok[:, None] & pix_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(a.to(xt.dtype), xt, acc, input_precision=PRECISION)
    y_ptrs = y_ptr + n * sy_n + rows[:, None].to(tl.int64) * sy_c + pix[None, :] * sy_p
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & pix_ok[None, :])


@triton.jit
def dm_epilogue(
    acc,
    ri,
    rj,
    C,
    m_ptr,
    sm_r,
    sm_c,
    dm_ptr,
    grad_p_ptr,
    row_norm_ptr,
    col_norm_ptr,
    has_grad_p,
):
    """dM[ri, rj] = acc (+ g * dP/dM[ri, rj] from the saved norms when `has_grad_p`), stored in
    dM's dtype."""
    i_ok = ri < C
    j_ok = rj < C
    mask = i_ok[:, None] & j_ok[None, :]
    if has_grad_p:
        m = tl.load(m_ptr + ri[:, None] * sm_r + rj[None, :] * sm_c, mask=mask, other=0.0)
        r = tl.load(row_norm_ptr + ri, mask=i_ok, other=0.0)
        c = tl.load(col_norm_ptr + rj, mask=j_ok, other=0.0)
        g = tl.load(grad_p_ptr).to(tl.float32)
        acc += g * penalty_grad_tile(m.to(tl.float32), r.to(tl.float32), c.to(tl.float32))
    dm_ptrs = dm_ptr + ri[:, None].to(tl.int64) * C + rj[None, :]
    tl.store(dm_ptrs, acc.to(dm_ptr.dtype.element_ty), mask=mask)


@triton.jit
def dm_tile(
    pid,
    dy_ptr,
    sd_n,
    sd_c,
    sd_p,
    x_ptr,
    sx_n,
    sx_c,
    sx_p,
    m_ptr,
    sm_r,
    sm_c,
    dm_ptr,
    grad_p_ptr,
    row_norm_ptr,
    col_norm_ptr,
    ws_ptr,
    counter_ptr,
    C,
    N,
    P,
    num_splits,
    split_k,
    has_grad_p,
    BLOCK_D: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Split `pid // tiles` of dM tile `pid % tiles`: its share of the (n, pixel block) steps.
    `split_k` (num_splits > 1: partial tiles meet in the workspace) and `has_grad_p` are run-time
    flags, not constexprs: one compiled kernel serves every case (one JIT compile, not four)."""
    num_d = tl.cdiv(C, BLOCK_D)
    tiles = num_d * num_d
    tile = pid % tiles
    split = pid // tiles
    ri = (tile // num_d) * BLOCK_D + tl.arange(0, BLOCK_D)
    rj = (tile % num_d) * BLOCK_D + tl.arange(0, BLOCK_D)
    i_ok = ri < C
    j_ok = rj < C
    num_pb = tl.cdiv(P, BLOCK_Q)
    steps = N * num_pb
    per_split = tl.cdiv(steps, num_splits)
    acc = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
    for t in range(split * per_split, tl.minimum(steps, (split + 1) * per_split)):
        n = (t // num_pb).to(tl.int64)
        pix = (t % num_pb).to(tl.int64) * BLOCK_Q + tl.arange(0, BLOCK_Q)
        pix_ok = pix < P
        d = tl.load(
            dy_ptr + n * sd_n + ri[:, None].to(tl.int64) * sd_c + pix[None, :] * sd_p,
            mask=i_ok[:, None] & pix_ok[None, :],
            other=0.0,
        )
        xt = tl.load(
            x_ptr + n * sx_n + rj[None, :].to(tl.int64) * sx_c + pix[:, None] * sx_p,
            mask=pix_ok[:, None] & j_ok[None, :],
            other=0.0,
        )
        acc = tl.dot(d, xt, acc, input_precision=PRECISION)
    if split_k:
        offs = tl.arange(0, BLOCK_D)[:, None] * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
        tile_ws = ws_ptr + tile.to(tl.int64) * BLOCK_D * BLOCK_D
        split_stride = tiles.to(tl.int64) * BLOCK_D * BLOCK_D
        tl.store(tile_ws + split * split_stride + offs, acc)
        # Every thread's stores must precede the release of the arrival count.
        tl.debug_barrier()
        arrived = tl.atomic_add(counter_ptr + tile, 1, sem="acq_rel")
        if arrived == num_splits - 1:
            total = tl.zeros((BLOCK_D, BLOCK_D), dtype=tl.float32)
            for s in range(0, num_splits):  # fixed order: the same bits whoever arrives last
                total += tl.load(tile_ws + s * split_stride + offs, cache_modifier=".cg")
            dm_epilogue(total, ri, rj, C, m_ptr, sm_r, sm_c, dm_ptr, grad_p_ptr, row_norm_ptr,
                        col_norm_ptr, has_grad_p)  # fmt: skip
    else:
        dm_epilogue(acc, ri, rj, C, m_ptr, sm_r, sm_c, dm_ptr, grad_p_ptr, row_norm_ptr,
                    col_norm_ptr, has_grad_p)  # fmt: skip


@triton.jit
def _shuffle_mix_fwd_kernel(
    x_ptr,
    m_ptr,
    y_ptr,
    out_ptr,
    row_norm_ptr,
    col_norm_ptr,
    col_ws_ptr,
    part_ptr,
    counter_ptr,
    C,
    P,
    sx_n,
    sx_c,
    sx_p,
    sy_n,
    sy_c,
    sy_p,
    sm_r,
    sm_c,
    num_rb,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < num_rb:
        penalty_program(m_ptr, sm_r, sm_c, C, pid, num_rb, out_ptr, row_norm_ptr, col_norm_ptr,
                        col_ws_ptr, part_ptr, counter_ptr, BLOCK_R, BLOCK_C)  # fmt: skip
    else:
        mix_tile(pid - num_rb, m_ptr, sm_r, sm_c, x_ptr, sx_n, sx_c, sx_p, y_ptr, sy_n, sy_c, sy_p,
                 C, P, BLOCK_M, BLOCK_Q, BLOCK_K, PRECISION)  # fmt: skip


# split_k and has_grad_p are flags: never specialised by value (a 1 would become a constexpr).
@triton.jit(do_not_specialize=["split_k", "has_grad_p"])
def _shuffle_mix_bwd_kernel(
    dy_ptr,
    x_ptr,
    m_ptr,
    dx_ptr,
    dm_ptr,
    grad_p_ptr,
    row_norm_ptr,
    col_norm_ptr,
    ws_ptr,
    counter_ptr,
    C,
    N,
    P,
    sd_n,
    sd_c,
    sd_p,
    sx_n,
    sx_c,
    sx_p,
    sdx_n,
    sdx_c,
    sdx_p,
    sm_r,
    sm_c,
    num_dm,
    num_splits,
    split_k,
    has_grad_p,
    BLOCK_M: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_DQ: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid = tl.program_id(0)
    # dM programs first: they are the long ones (a reduction over pixels).
    if pid < num_dm:
        dm_tile(pid, dy_ptr, sd_n, sd_c, sd_p, x_ptr, sx_n, sx_c, sx_p, m_ptr, sm_r, sm_c, dm_ptr,
                grad_p_ptr, row_norm_ptr, col_norm_ptr, ws_ptr, counter_ptr, C, N, P, num_splits,
                split_k, has_grad_p, BLOCK_D, BLOCK_DQ, PRECISION)  # fmt: skip
    else:  # dX = M^T dY: A[i, k] = M[k, i]
        mix_tile(pid - num_dm, m_ptr, sm_c, sm_r, dy_ptr, sd_n, sd_c, sd_p, dx_ptr, sdx_n, sdx_c,
                 sdx_p, C, P, BLOCK_M, BLOCK_Q, BLOCK_K, PRECISION)  # fmt: skip


# ---- launchers ----


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return "ieee"


def _ncp(tensors: list[torch.Tensor]) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(N, P, [(s_n, s_c, s_p)]) addressing each [N, C, ...] tensor as [N, C, P]. The tensors must
    be views of [N, C, P]; when every one has s_n == P * s_p (or N == 1, or P == 1) the batch is
    folded into the pixels, N = 1."""
    shape = tensors[0].shape
    N, C = shape[0], shape[1]
    P = 1
    for s in shape[2:]:
        P *= s
    views = [t.view(N, C, P) for t in tensors]
    strides = [v.stride() for v in views]
    if N == 1 or P == 1 or all(sn == P * sp for sn, _, sp in strides):
        strides = [(0, sc, sp if P > 1 else sn) for sn, sc, sp in strides]
        return 1, N * P, strides
    return N, P, strides


def _pixel_view(t: torch.Tensor) -> torch.Tensor:
    """t itself when its pixel dims merge into one (a view), else a contiguous copy."""
    try:
        t.view(t.shape[0], t.shape[1], -1)
        return t
    except RuntimeError:
        return t.contiguous()


def _mix_blocks(C: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_Q, BLOCK_K) of the mixing tiles: all of a small C in one row block."""
    return min(max(triton.next_power_of_2(C), 16), 128), 64, 32


def _on_fma_units(dtype: torch.dtype, precision: str) -> bool:
    """Whether tl.dot runs on the FMA units (float32 without TF32), not on tensor cores: its
    operand tiles then live in registers."""
    return dtype == torch.float32 and precision == "ieee"


def _fwd_warps(fma: bool, block_m: int, block_q: int) -> int:
    """Warps per forward program. With the product on the FMA units (`_on_fma_units`), at 4 warps
    a [128, 64] tile needs more than 255 registers per thread and spills on sm_80 (72 bytes, seen
    by tests/test_triton_compile.py); at 8 warps it takes 176, at the same occupancy."""
    return 8 if fma and block_m * block_q >= 128 * 64 else 4


def _bwd_tuning(fma: bool, mixed: bool, block_d: int) -> tuple[int, int, int]:
    """(BLOCK_DQ, num_warps, num_stages) of the backward, chosen so that no configuration spills
    on sm_80 or sm_90 (tests/test_triton_compile.py). With the product on the FMA units
    (`_on_fma_units`), the [64, 64] dM tile spills at 4 warps (752 bytes on sm_80) and still at 8
    warps with 3 stages (8 bytes); 8 warps and 2 stages take 176 registers. The [32, 32] tile
    spills 12 bytes on sm_90 with 64-pixel steps, none with 32. A float32 M with a half x
    (`mixed`) spills 4 bytes at 168 registers with 4 warps on sm_80, none with 8."""
    if fma:
        return (64, 8, 2) if block_d >= 64 else (32, 4, 3)
    return (64, 8, 3) if mixed and block_d >= 64 else (64, 4, 3)


def _num_sms(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter: a few splits, to exercise the split path


def shuffle_mix_forward(
    x: torch.Tensor,
    M: torch.Tensor,
    y: torch.Tensor,
    *,
    blocks: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, P(M), row_norm, col_norm) in one launch; y (preallocated, x's shape and dtype, any
    layout whose pixels merge) receives M x. `blocks` overrides (BLOCK_M, BLOCK_Q, BLOCK_K)."""
    x = _pixel_view(x)
    C = x.shape[1]
    acc = norm_dtype(M.dtype)
    out = torch.empty((), device=M.device, dtype=M.dtype)
    row = torch.empty(C, device=M.device, dtype=acc)
    col = torch.empty(C, device=M.device, dtype=acc)
    block_m, block_q, block_k = blocks or _mix_blocks(C)
    block_r, block_c = norm_blocks(C)
    num_rb, col_ws, part, counter = penalty_workspace(1, C, M.device, acc)
    N, P, ((sx_n, sx_c, sx_p), (sy_n, sy_c, sy_p)) = _ncp([x, y])
    num_mix = triton.cdiv(C, block_m) * triton.cdiv(P, block_q) * N
    precision = _precision(x.dtype)
    num_warps = _fwd_warps(_on_fma_units(x.dtype, precision), block_m, block_q)
    _shuffle_mix_fwd_kernel[(num_rb + num_mix,)](
        x, M, y, out, row, col, col_ws, part, counter, C, P,
        sx_n, sx_c, sx_p, sy_n, sy_c, sy_p, *M.stride(), num_rb,
        BLOCK_M=block_m, BLOCK_Q=block_q, BLOCK_K=block_k, BLOCK_R=block_r, BLOCK_C=block_c,
        PRECISION=precision, num_warps=num_warps,
    )  # fmt: skip
    return y, out, row, col


def shuffle_mix_backward(
    dy: torch.Tensor,
    grad_p: torch.Tensor | None,
    x: torch.Tensor,
    M: torch.Tensor,
    row_norm: torch.Tensor,
    col_norm: torch.Tensor,
    dx: torch.Tensor | None,
    dm: torch.Tensor | None,
    *,
    blocks: tuple[int, int, int] | None = None,
    dm_blocks: tuple[int, int] | None = None,
    num_splits: int | None = None,
) -> None:
    """Fills dx = M^T dy (when given) and dm = sum dy x^T + grad_p * dP/dM (when given; contiguous
    [C, C]) in one launch. `blocks` overrides the dX tiles (BLOCK_M, BLOCK_Q, BLOCK_K), `dm_blocks`
    the dM tiles (BLOCK_D, BLOCK_DQ), `num_splits` the split-K count of the dM reduction."""
    if dy.dtype != x.dtype or dy.shape != x.shape:
        raise ValueError(f"dy must match x ({x.dtype}, {tuple(x.shape)}), got {dy.dtype}, "
                         f"{tuple(dy.shape)}")  # fmt: skip
    dy, x = _pixel_view(dy), _pixel_view(x)
    C = x.shape[1]
    precision = _precision(x.dtype)
    block_m, block_q, block_k = blocks or _mix_blocks(C)
    block_d = dm_blocks[0] if dm_blocks else (64 if C > 32 else 32)
    fma = _on_fma_units(x.dtype, precision)
    block_dq, num_warps, num_stages = _bwd_tuning(fma, M.dtype != x.dtype, block_d)
    block_dq = dm_blocks[1] if dm_blocks else block_dq
    N, P, strides = _ncp([dy, x, dx if dx is not None else dy])
    (sd_n, sd_c, sd_p), (sx_n, sx_c, sx_p), (sdx_n, sdx_c, sdx_p) = strides
    num_dx = triton.cdiv(C, block_m) * triton.cdiv(P, block_q) * N if dx is not None else 0
    tiles = triton.cdiv(C, block_d) ** 2
    steps = N * triton.cdiv(P, block_dq)
    if num_splits is None:  # fill the machine: ~4 programs per SM, counting the dX programs
        want = max(4 * _num_sms(M.device) - num_dx, 0)
        num_splits = min(max(want // tiles, 1), max(steps, 1), 64)
    num_dm = tiles * num_splits if dm is not None else 0
    split = num_dm > 0 and num_splits > 1
    ws_shape = (num_splits, tiles, block_d, block_d) if split else (1,)
    ws = torch.empty(ws_shape, device=M.device, dtype=torch.float32)
    counter = torch.zeros(tiles if split else 1, device=M.device, dtype=torch.int32)
    if num_dm + num_dx == 0:
        return
    _shuffle_mix_bwd_kernel[(num_dm + num_dx,)](
        dy, x, M, dx if dx is not None else dy, dm if dm is not None else M,
        grad_p if grad_p is not None else M, row_norm, col_norm, ws, counter, C, N, P,
        sd_n, sd_c, sd_p, sx_n, sx_c, sx_p, sdx_n, sdx_c, sdx_p, *M.stride(), num_dm, num_splits,
        int(split), int(grad_p is not None), BLOCK_M=block_m, BLOCK_Q=block_q,
        BLOCK_K=block_k, BLOCK_D=block_d, BLOCK_DQ=block_dq, PRECISION=precision,
        num_warps=num_warps, num_stages=num_stages,
    )  # fmt: skip
