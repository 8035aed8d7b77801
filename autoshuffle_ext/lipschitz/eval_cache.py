"""A weight computed from parameters (an orthonormalised matrix, a BCOP kernel), computed once in
evaluation mode and reused while the parameters are unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["cached_in_eval"]


def _versions(params: Iterable[torch.Tensor]) -> tuple:
    # An in-place update bumps the version; `.to()`, `.data = ...` and copies change the storage.
    return tuple((p.data_ptr(), p.dtype, p._version) for p in params)


def cached_in_eval(
    module: nn.Module, params: tuple[torch.Tensor, ...], compute: Callable[[], torch.Tensor]
) -> torch.Tensor:
    """`compute()` in training mode (differentiable, every call); in evaluation mode its value
    without gradient, computed at the first call and reused while no tensor of `params` has
    changed (an optimizer step, `load_state_dict`, `.to()` all invalidate it). Under
    `torch.compile` / `torch.export` it computes every call (the graph owns its values).

    The cache lives in `module._eval_cache`, which copies and pickles should drop."""
    if module.training or torch.compiler.is_compiling():
        return compute()
    key = _versions(params)
    cached = getattr(module, "_eval_cache", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        value = compute()
    module._eval_cache = (key, value)
    return value
