"""Triton kernels of the l1-l2 penalty `P(M) = sum_i (|M_i,:|_1 - |M_i,:|_2) + (same over columns)`.

Forward, one launch: program (rb, b) reads row block `rb` of matrix `b` once and produces the l2
norms of its rows, its share of the penalty (`2 |M_rows|_1 - sum |M_i,:|_2`) and its partial column
sums of squares. The column norms need every row block, so the programs meet through a counter:
the last one to arrive (atomic, acq_rel) sums the partials in a fixed order (deterministic, no
float atomics), writes the column norms and the value. No program waits, so the pattern is
deadlock-free and also runs in the interpreter, where programs run one after another.

Backward, one launch: `dM = g * (2 sign(M) - M * (1/r_i + 1/c_j))`, elementwise from the saved
norms. Saving the 2n norms instead of the n x n gradient costs no extra pass over M and writes
nothing when no backward follows.

The helpers `row_block_partials`, `finish_penalty` and `penalty_grad_tile` are shared with the
fused mixing kernels (`mixing.py`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import as_stack, norm_dtype

__all__ = ["penalty_backward", "penalty_forward"]


@triton.jit
def row_block_partials(
    m_ptr,
    stride_r,
    stride_c,
    n,
    rb,
    row_norm_ptr,
    col_ws_ptr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Row block `rb` of an [n, n] matrix: stores the l2 norms of its rows at row_norm_ptr, the
    sums of squares of its column pieces at col_ws_ptr[0:n], and returns 2 |block|_1 - sum of
    its row norms (its share of the penalty)."""
    rows = rb * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n
    row_off = rows.to(tl.int64) * stride_r
    acc_t: tl.constexpr = row_norm_ptr.dtype.element_ty  # float32, or float64 for float64 M
    sumsq = tl.zeros([BLOCK_R], dtype=acc_t)
    l1 = tl.zeros([BLOCK_R], dtype=acc_t)
    for c0 in range(0, n, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < n
        mask = row_ok[:, None] & col_ok[None, :]
        ptrs = m_ptr + row_off[:, None] + cols[None, :].to(tl.int64) * stride_c
        m = tl.load(ptrs, mask=mask, other=0.0).to(acc_t)
        sq = m * m
        sumsq += tl.sum(sq, axis=1)
        l1 += tl.sum(tl.abs(m), axis=1)
        tl.store(col_ws_ptr + cols, tl.sum(sq, axis=0), mask=col_ok)
    norms = tl.sqrt(sumsq)
    tl.store(row_norm_ptr + rows, norms, mask=row_ok)
    return tl.sum(2 * l1 - norms, axis=0)


@triton.jit
def finish_penalty(
    col_ws_ptr,
    part_ptr,
    col_norm_ptr,
    out_ptr,
    n,
    num_rb,
    BLOCK_C: tl.constexpr,
):
    """Run by the last program of a matrix: column norms from the [num_rb, n] partial sums of
    squares, and P = sum of the row-block shares - sum of the column norms, stored at out_ptr.
    Loads bypass L1 (.cg): the partials were written by other SMs."""
    acc_t: tl.constexpr = col_norm_ptr.dtype.element_ty
    total = tl.zeros([BLOCK_C], dtype=acc_t)
    for r0 in range(0, num_rb, BLOCK_C):
        idx = r0 + tl.arange(0, BLOCK_C)
        total += tl.load(part_ptr + idx, mask=idx < num_rb, other=0.0, cache_modifier=".cg")
    for c0 in range(0, n, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < n
        sumsq = tl.zeros([BLOCK_C], dtype=acc_t)
        for r in range(0, num_rb):
            sumsq += tl.load(
                col_ws_ptr + r * n + cols, mask=col_ok, other=0.0, cache_modifier=".cg"
            )
        norms = tl.sqrt(sumsq)
        tl.store(col_norm_ptr + cols, norms, mask=col_ok)
        total -= norms
    tl.store(out_ptr, tl.sum(total, axis=0).to(out_ptr.dtype.element_ty))


@triton.jit
def penalty_program(
    m_ptr,
    stride_r,
    stride_c,
    n,
    rb,
    num_rb,
    out_ptr,
    row_norm_ptr,
    col_norm_ptr,
    col_ws_ptr,
    part_ptr,
    counter_ptr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """One row block of the penalty forward of one matrix, finishing it if it arrives last.

    col_ws_ptr: [num_rb, n] scratch, part_ptr: [num_rb] scratch, counter_ptr: an int32 zero."""
    share = row_block_partials(
        m_ptr, stride_r, stride_c, n, rb, row_norm_ptr, col_ws_ptr + rb * n, BLOCK_R, BLOCK_C
    )
    tl.store(part_ptr + rb, share)
    # Every thread's stores must precede the release of the arrival count.
    tl.debug_barrier()
    arrived = tl.atomic_add(counter_ptr, 1, sem="acq_rel")
    if arrived == num_rb - 1:
        finish_penalty(col_ws_ptr, part_ptr, col_norm_ptr, out_ptr, n, num_rb, BLOCK_C)


@triton.jit
def penalty_grad_tile(m, row_norm, col_norm):
    """dP/dM on a tile: 2 sign(m) - m (1/r_i + 1/c_j), a zero norm contributing 0."""
    r_inv = tl.where(row_norm > 0, 1.0 / tl.where(row_norm > 0, row_norm, 1.0), 0.0)
    c_inv = tl.where(col_norm > 0, 1.0 / tl.where(col_norm > 0, col_norm, 1.0), 0.0)
    sign = tl.where(m > 0, 1.0, tl.where(m < 0, -1.0, 0.0))
    return 2.0 * sign - m * (r_inv[:, None] + c_inv[None, :])


@triton.jit
def _penalty_fwd_kernel(
    m_ptr,
    out_ptr,
    row_norm_ptr,
    col_norm_ptr,
    col_ws_ptr,
    part_ptr,
    counter_ptr,
    n,
    num_rb,
    stride_b,
    stride_r,
    stride_c,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    rb = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    penalty_program(
        m_ptr + b * stride_b,
        stride_r,
        stride_c,
        n,
        rb,
        num_rb,
        out_ptr + b,
        row_norm_ptr + b * n,
        col_norm_ptr + b * n,
        col_ws_ptr + b * num_rb * n,
        part_ptr + b * num_rb,
        counter_ptr + b,
        BLOCK_R,
        BLOCK_C,
    )


@triton.jit
def _penalty_bwd_kernel(
    grad_ptr,
    m_ptr,
    row_norm_ptr,
    col_norm_ptr,
    out_ptr,
    n,
    stride_b,
    stride_r,
    stride_c,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    b = tl.program_id(2).to(tl.int64)
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok = rows < n
    col_ok = cols < n
    mask = row_ok[:, None] & col_ok[None, :]
    acc_t: tl.constexpr = row_norm_ptr.dtype.element_ty
    m_ptrs = m_ptr + b * stride_b + rows[:, None].to(tl.int64) * stride_r + cols[None, :] * stride_c
    m = tl.load(m_ptrs, mask=mask, other=0.0).to(acc_t)
    r = tl.load(row_norm_ptr + b * n + rows, mask=row_ok, other=0.0)
    c = tl.load(col_norm_ptr + b * n + cols, mask=col_ok, other=0.0)
    g = tl.load(grad_ptr + b).to(acc_t)
    dm = g * penalty_grad_tile(m, r, c)
    out_ptrs = out_ptr + b * n * n + rows[:, None].to(tl.int64) * n + cols[None, :]
    tl.store(out_ptrs, dm.to(out_ptr.dtype.element_ty), mask=mask)


def norm_warps(block_c: int) -> int:
    """Warps of the penalty forward, chosen so that no tile spills on sm_80 or sm_90
    (tests/test_triton_compile.py): at 4 warps the bfloat16 [8, 512] tile spills 8 bytes on sm_90,
    at 8 warps the float16 [128, 32] one spills 4."""
    return 8 if block_c >= 512 else 4


def norm_blocks(n: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_C) of the norm programs: whole rows of 16 to 1024 columns, ~4K elements.
    Narrower tiles than 16 columns (n < 16) take 150-250 registers per thread on sm_80/sm_90 for
    nothing: such a matrix fits one program either way."""
    block_c = min(max(triton.next_power_of_2(n), 16), 1024)
    return max(4096 // block_c, 1), block_c


def penalty_workspace(
    batch: int, n: int, device: torch.device, dtype: torch.dtype
) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(num_rb, col_ws [B, num_rb, n], part [B, num_rb], counter [B] of zeros): norm scratch."""
    block_r, _ = norm_blocks(n)
    num_rb = triton.cdiv(n, block_r)
    col_ws = torch.empty((batch, num_rb, n), device=device, dtype=dtype)
    part = torch.empty((batch, num_rb), device=device, dtype=dtype)
    counter = torch.zeros(batch, device=device, dtype=torch.int32)
    return num_rb, col_ws, part, counter


def penalty_forward(M: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(P, row_norm, col_norm) of M [n, n] or [B, n, n], one kernel launch.

    P has M's dtype and shape M.shape[:-2]; the norms are float32 (float64 for a float64 M) of
    shape M.shape[:-1]. Any strides."""
    Mb = as_stack(M)
    B, n, _ = Mb.shape
    acc = norm_dtype(M.dtype)
    out = torch.empty(B, device=M.device, dtype=M.dtype)
    row = torch.empty((B, n), device=M.device, dtype=acc)
    col = torch.empty((B, n), device=M.device, dtype=acc)
    if B > 0 and n > 0:
        block_r, block_c = norm_blocks(n)
        num_rb, col_ws, part, counter = penalty_workspace(B, n, M.device, acc)
        _penalty_fwd_kernel[(num_rb, B)](
            Mb, out, row, col, col_ws, part, counter, n, num_rb, *Mb.stride(),
            BLOCK_R=block_r, BLOCK_C=block_c, num_warps=norm_warps(block_c),
        )  # fmt: skip
    else:
        out.zero_()
    shape = M.shape[:-2]
    return out.view(shape), row.view(M.shape[:-1]), col.view(M.shape[:-1])


def penalty_backward(
    grad: torch.Tensor, M: torch.Tensor, row_norm: torch.Tensor, col_norm: torch.Tensor
) -> torch.Tensor:
    """grad[..., None, None] * dP/dM (M's dtype, contiguous), from the forward's saved norms."""
    Mb = as_stack(M)
    B, n, _ = Mb.shape
    out = torch.empty((B, n, n), device=M.device, dtype=M.dtype)
    if out.numel() > 0:
        grid = (triton.cdiv(n, 32), triton.cdiv(n, 64), B)
        _penalty_bwd_kernel[grid](
            grad.contiguous(), Mb, row_norm.contiguous(), col_norm.contiguous(), out, n,
            *Mb.stride(), BLOCK_R=32, BLOCK_C=64,
        )  # fmt: skip
    return out.view(M.shape)
