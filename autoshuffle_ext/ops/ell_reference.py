"""The plain PyTorch reference of the sparse mixing kernels, and the sparse form they read.

A doubly stochastic M late in training has a few non-zeros per row. Its sparse form is the
padded row list ("ELL"): `index[i, k]` is the column of the k-th non-zero of row i, or -1 past
the row's last one. The kernels compute

    y[:, i, ...] = sum_k A[i, index[i, k]] * x[:, index[i, k], ...]      (index[i, k] >= 0)

reading the values from the dense A itself, so that the same kernel serves the forward (A = M,
the row list of M) and the input gradient (A = M^T, the row list of M^T, i.e. M's column list).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["ell_index", "ell_mix_reference"]


def ell_index(A: Tensor) -> Tensor:
    """The padded row list of A's non-zeros: int64 [C, K], K the most non-zeros of a row (at
    least 1), each row's columns in increasing order, then -1."""
    nonzero = A != 0
    counts = nonzero.sum(1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    # Non-zero columns first, each group in column order: a stable sort of "is zero".
    order = torch.sort((~nonzero).to(torch.int8), dim=1, stable=True).indices[:, :width]
    slots = torch.arange(width, device=A.device)
    return torch.where(slots < counts[:, None], order, torch.full_like(order, -1))


def ell_mix_reference(x: Tensor, A: Tensor, index: Tensor) -> Tensor:
    """y[:, i] = sum_k A[i, index[i, k]] x[:, index[i, k]] (entries with index -1 skipped), in
    x's dtype, accumulated in float32 for float16/bfloat16 (float64 for float64); contiguous."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    valid = index >= 0
    cols = index.clamp(min=0)
    weights = torch.where(valid, A.to(acc).gather(1, cols), 0)  # [C, K]
    C, K = index.shape
    picked = x.to(acc).index_select(1, cols.flatten())  # [N, C * K, ...]
    picked = picked.unflatten(1, (C, K))
    shape = (1, C, K) + (1,) * (x.dim() - 2)
    return (picked * weights.view(shape)).sum(2).to(x.dtype).contiguous()
