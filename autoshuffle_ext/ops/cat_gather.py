"""`cat_gather`: the concatenation of two tensors along the channels, permuted, in one pass:
`out[:, c] = torch.cat([a, b], 1)[:, perm[c]]` (a ShuffleNet v2 unit's concat and shuffle).

The op `torch.ops.autoshuffle_ext.cat_gather` is implemented in C++: CPU and CUDA kernels and the
autograd formula (the gather of the gradient by the inverse permutation, split into a's and b's
channels) live in `csrc/`. This file gives the op its fake kernel, for `torch.compile` and
`torch.export`, its batching rule for `torch.func.vmap`, the checked Python entry point, and, when
the compiled library is missing, an ATen fallback of the same schema (differentiable through ATen).
"""

from __future__ import annotations

import torch

from .._extension import extension_available
from .channel_gather import (
    _batch_after_channels,
    _batch_first,
    _gather_per_sample,
    _holds_values,
    _require_compiled_cpu,
    check_permutation,
    gather_memory_format,
)

__all__ = ["cat_gather", "cat_gather_memory_format", "cat_gather_path"]


def cat_gather_memory_format(a: torch.Tensor, b: torch.Tensor) -> torch.memory_format:
    """The memory format of `cat_gather(a, b, perm)`'s output.

    The one a and b share, each read as `channel_gather` reads its input (`gather_memory_format`:
    its own format when it is dense in it, else the one its strides are closest to; a channel
    slice of a channels_last tensor counts as channels_last), contiguous when they differ, as
    `torch.cat` decides. Mirrors `cat_gather_memory_format` in csrc/cat_gather.h: the fake kernel
    must produce exactly the strides of the real one.
    """
    fmt = gather_memory_format(a)
    return fmt if fmt == gather_memory_format(b) else torch.contiguous_format


def _check_args(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> None:
    """The op's argument checks, with the C++ kernels' messages and exception types.

    Plain raises on metadata: eager, the fake kernel and Dynamo (which evaluates them while
    tracing) all run them.
    """
    if a.dim() < 2:
        raise ValueError(
            "cat_gather: a must have at least 2 dims (N, C, ...), got "
            f"{a.dim()} dims with shape {tuple(a.shape)}"
        )
    if b.dim() != a.dim():
        raise ValueError(
            f"cat_gather: b must have a's number of dims {a.dim()}, got {b.dim()} dims with "
            f"shape {tuple(b.shape)}"
        )
    if any(d != 1 and b.shape[d] != a.shape[d] for d in range(a.dim())):
        raise ValueError(
            "cat_gather: b must have a's size in every dim but 1 (a.shape = "
            f"{tuple(a.shape)}), got b.shape = {tuple(b.shape)}"
        )
    if b.dtype != a.dtype:
        raise TypeError(f"cat_gather: b must have a's dtype {a.dtype}, got {b.dtype}")
    if b.device != a.device:
        raise ValueError(f"cat_gather: b must be on a's device {a.device}, got {b.device}")
    if perm.dim() != 1:
        raise ValueError(
            f"cat_gather: perm must be 1-D, got {perm.dim()} dims with shape {tuple(perm.shape)}"
        )
    if perm.dtype != torch.int64:
        raise TypeError(f"cat_gather: perm must have dtype int64 (torch.long), got {perm.dtype}")
    if perm.device != a.device:
        raise ValueError(f"cat_gather: perm must be on a's device {a.device}, got {perm.device}")
    ca, cb = a.shape[1], b.shape[1]
    if perm.shape[0] != ca + cb:
        raise ValueError(
            f"cat_gather: perm must have length a.size(1) + b.size(1) = {ca} + {cb} = "
            f"{ca + cb}, got {perm.shape[0]}"
        )


def _empty_output(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # torch.empty(memory_format=...) gives the strides at::empty does, also where the layout is
    # ambiguous (C == 1, H == W == 1).
    shape = (a.shape[0], a.shape[1] + b.shape[1], *a.shape[2:])
    return torch.empty(
        shape, dtype=a.dtype, device=a.device, memory_format=cat_gather_memory_format(a, b)
    )


if not extension_available():
    # Same schema, ATen implementation; a FRAGMENT so other ops may share the namespace.
    _FALLBACK = torch.library.Library("autoshuffle_ext", "FRAGMENT")
    _FALLBACK.define(
        "cat_gather(Tensor a, Tensor b, Tensor perm) -> Tensor",
        tags=(torch.Tag.needs_fixed_stride_order, torch.Tag.pt2_compliant_tag),
    )

    def _fallback_check_entries(perm: torch.Tensor) -> None:
        c = perm.shape[0]
        if perm.numel() and not bool(((perm >= 0) & (perm < c)).all()):
            raise IndexError(
                f"cat_gather: perm entries must lie in [0, {c}) (C = a.size(1) + b.size(1))"
            )
        check_permutation(perm, c)  # as the C++ CPU kernel: the gradient needs a permutation

    def _fallback(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        _check_args(a, b, perm)
        _fallback_check_entries(perm)
        return _empty_output(a, b).copy_(torch.cat([a, b], 1).index_select(1, perm))

    def _fallback_autograd(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        # The Autograd key: cat and index_select carry reverse and forward mode and torch.func's
        # transforms (the compiled library has its own formulas, csrc/autograd.cpp).
        _check_args(a, b, perm)
        if _holds_values(perm):
            _fallback_check_entries(perm)
        full = torch.cat([a, b], 1).index_select(1, perm)
        return full.contiguous(memory_format=cat_gather_memory_format(a, b))

    _FALLBACK.impl("cat_gather", _fallback, "CompositeExplicitAutograd")
    _FALLBACK.impl("cat_gather", _fallback_autograd, "Autograd")

_op = torch.ops.autoshuffle_ext.cat_gather


@torch.library.register_fake("autoshuffle_ext::cat_gather")
def _(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    _check_args(a, b, perm)
    return _empty_output(a, b)


@torch.library.register_vmap("autoshuffle_ext::cat_gather")
def _(info, in_dims, a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor):
    a_dim, b_dim, perm_dim = in_dims
    size = info.batch_size
    if perm_dim is None:  # one perm for the whole batch: one cat_gather
        a, b = _batch_after_channels(a, a_dim, size), _batch_after_channels(b, b_dim, size)
        return _op.default(a, b, perm), 2
    full = torch.cat([_batch_first(a, a_dim, size), _batch_first(b, b_dim, size)], 2)
    return _gather_per_sample(full, perm.movedim(perm_dim, 0)), 0


def cat_gather(
    a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor, *, validate: bool = True
) -> torch.Tensor:
    """Concatenates a and b along the channels and permutes the result, in one pass:
    `out[:, c, ...] = torch.cat([a, b], 1)[:, perm[c], ...]`.

    Equal to `channel_gather(torch.cat([a, b], 1), perm)`, without the intermediate tensor: each
    output channel is copied straight from a or b. ShuffleNet v2 units end this way.

    Args:
        a, b: tensors of shapes [N, Ca, ...] and [N, Cb, ...] (at least 2 dims, equal in every
            dim but 1; Ca or Cb may be 0), same dtype and device, any layout. Channel slices
            (`x.chunk(2, 1)`) are read in place. The result is dense in the memory format a and
            b share, contiguous when they differ (see `cat_gather_memory_format`).
        perm: 1-D int64 tensor of length Ca + Cb on a's device, a permutation of 0..Ca+Cb-1.
        validate: check here that perm is a permutation, as `channel_gather` does (skipped while
            `torch.compile` traces and for meta / fake tensors). Without it the CPU kernel still
            checks that perm is a permutation and the CUDA kernel that its entries are in range.

    Returns:
        A tensor of shape [N, Ca + Cb, ...], differentiable in a and b: the gradient is the
        gather by the inverse permutation, split into a's and b's channels.

    Raises:
        TypeError: a, b or perm is not a tensor; b has another dtype than a; perm is not int64.
        ValueError: a has fewer than 2 dims; b's dims or sizes (but dim 1) differ from a's; b or
            perm is on another device; perm is not 1-D, has a length other than Ca + Cb or is
            not a permutation.
        IndexError: (validate=False) an entry of perm lies outside [0, Ca + Cb).
    """
    for name, value in (("a", a), ("b", b), ("perm", perm)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"cat_gather: {name} must be a torch.Tensor, got {type(value).__name__}"
            )
    _check_args(a, b, perm)
    if validate and not torch.compiler.is_compiling():
        check_permutation(perm, perm.shape[0])
    return _op.default(a, b, perm)


def cat_gather_path(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor) -> str:
    """The CPU path `cat_gather(a, b, perm)` takes now: one of `gather_path_names()` (the same
    planner as `channel_gather`'s), or "none" for an empty output. For tests and bug reports.

    Raises:
        RuntimeError: the compiled library is not loaded.
        ValueError: a, b or perm is not on the CPU; the op's own errors for bad inputs; a forced
            path (`force_gather_path`, AUTOSHUFFLE_GATHER_PATH) that does not apply to them.
    """
    _require_compiled_cpu("cat_gather_path", a, b, perm)
    return torch.ops.autoshuffle_ext.cat_gather_path(a.detach(), b.detach(), perm)
