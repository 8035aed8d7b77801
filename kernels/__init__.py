"""Triton kernels of autoshuffle_ext (installed as `autoshuffle_ext.kernels`).

One file per op, each holding its `@triton.jit` kernels and the Python launchers that the custom
ops in `autoshuffle_ext.ops` call on CUDA tensors: `penalty` (the l1-l2 penalty, its norms and
gradient) and `mixing` (the fused shuffle_mix forward and backward). Importing this package does
not import triton; the op modules import the kernel files lazily, on the first CUDA call.
"""

from __future__ import annotations

import functools
import importlib.util

__all__ = ["triton_available"]


@functools.cache
def triton_available() -> bool:
    """True when triton can be imported (the CUDA ops fall back to ATen otherwise)."""
    return importlib.util.find_spec("triton") is not None
