"""Triton kernels of autoshuffle_ext (installed as `autoshuffle_ext.kernels`).

One file per op, each holding its `@triton.jit` kernels and the Python launchers that the custom
ops in `autoshuffle_ext.ops` call on CUDA tensors: `penalty` (the l1-l2 penalty, its norms and
gradient) and `mixing` (the fused shuffle_mix forward and backward). Importing this package does
not import triton; the op modules import the kernel files lazily, on the first CUDA call.

The package itself holds the conventions that the launchers share with the ATen paths of the ops
(and the matching code above them): the dtype of the norms, and the stack view of matrices.
"""

from __future__ import annotations

import functools
import importlib.util

import torch

__all__ = ["as_stack", "norm_dtype", "triton_available"]


@functools.cache
def triton_available() -> bool:
    """True when triton can be imported (the CUDA ops fall back to ATen otherwise)."""
    return importlib.util.find_spec("triton") is not None


def norm_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the norms are accumulated and saved in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_stack(M: torch.Tensor) -> torch.Tensor:
    """M [..., n, n] viewed as [B, n, n] (B = 1 for one matrix), the shape the kernels take."""
    return M.reshape(-1, *M.shape[-2:])
