"""`channel_gather`: an exact channel permutation, `out[:, c] = x[:, perm[c]]`.

The op `torch.ops.autoshuffle_ext.channel_gather` (and its `.out` overload) is implemented in
C++: CPU and CUDA kernels and the autograd formula (the gradient of a gather is the gather by the
inverse permutation, so perm must be a permutation: no repeated entry; the forward-mode formula
is the gather of the tangent) live in `csrc/`. This file gives the op its fake kernels, for
`torch.compile` and `torch.export`, its batching rule for `torch.func.vmap`, the checked Python
entry point, and, when the compiled library is missing, an ATen fallback of the same schemas
(differentiable through ATen: index_select).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch._C._functorch import is_batchedtensor
from torch._prims_common import (
    make_channels_last_strides_for,
    make_contiguous_strides_for,
    suggest_memory_format,
)
from torch._subclasses.fake_tensor import is_fake

from .._extension import extension_available

__all__ = [
    "channel_gather",
    "check_permutation",
    "fixed_shuffle_perm",
    "force_gather_path",
    "gather_memory_format",
    "gather_path",
    "gather_path_names",
    "inverse_permutation",
    "is_permutation",
]


def _empty_memory_format(x: torch.Tensor) -> torch.memory_format:
    # An empty tensor is "contiguous" in every format: read the format from its strides.
    strides = tuple(x.stride())
    if strides == tuple(make_contiguous_strides_for(x.shape)):
        return torch.contiguous_format
    if x.dim() in (4, 5) and strides == tuple(make_channels_last_strides_for(x.shape)):
        return torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    return torch.contiguous_format


def gather_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format of `channel_gather(x, perm)`'s output.

    x's own format when x is dense in it (contiguous first), else the format its strides are
    closest to. An empty x (dense in every format) is channels-last when its strides are exactly
    those `torch.empty(x.shape, memory_format=...)` gives in that format (an empty channels_last
    batch), else contiguous. Mirrors `gather_memory_format` in csrc/channel_gather.h: the fake
    kernel must produce exactly the strides of the real one.
    """
    if x.numel() == 0:
        return _empty_memory_format(x)
    if x.is_contiguous():
        return torch.contiguous_format
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    if x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return torch.channels_last_3d
    return suggest_memory_format(x)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """The permutation `inv` with `inv[perm[i]] = i` (1-D, perm's dtype and device)."""
    return torch.empty_like(perm).scatter_(
        0, perm, torch.arange(perm.numel(), device=perm.device, dtype=perm.dtype)
    )


def _check_args(x: torch.Tensor, perm: torch.Tensor) -> None:
    """The op's argument checks, with the C++ kernels' messages and exception types.

    Plain raises on metadata: eager, the fake kernels and Dynamo (which evaluates them while
    tracing) all run them.
    """
    if x.dim() < 2:
        raise ValueError(
            "channel_gather: x must have at least 2 dims (N, C, ...), got "
            f"{x.dim()} dims with shape {tuple(x.shape)}"
        )
    if perm.dim() != 1:
        raise ValueError(
            f"channel_gather: perm must be 1-D, got {perm.dim()} dims with shape "
            f"{tuple(perm.shape)}"
        )
    if perm.dtype != torch.int64:
        raise TypeError(
            f"channel_gather: perm must have dtype int64 (torch.long), got {perm.dtype}"
        )
    if perm.device != x.device:
        raise ValueError(
            f"channel_gather: perm must be on x's device {x.device}, got {perm.device}"
        )
    if perm.shape[0] != x.shape[1]:
        raise ValueError(
            f"channel_gather: perm must have length C = x.size(1) = {x.shape[1]}, "
            f"got {perm.shape[0]}"
        )


def _check_out(x: torch.Tensor, out: torch.Tensor) -> None:
    if out.shape != x.shape:
        raise ValueError(
            f"channel_gather: out must have x's shape {tuple(x.shape)}, got {tuple(out.shape)}"
        )
    if out.dtype != x.dtype:
        raise TypeError(f"channel_gather: out must have x's dtype {x.dtype}, got {out.dtype}")
    if out.device != x.device:
        raise ValueError(f"channel_gather: out must be on x's device {x.device}, got {out.device}")


if not extension_available():
    # Same schemas, ATen implementation; a FRAGMENT so other ops may share the namespace.
    _FALLBACK = torch.library.Library("autoshuffle_ext", "FRAGMENT")
    _TAGS = (torch.Tag.needs_fixed_stride_order, torch.Tag.pt2_compliant_tag)
    _FALLBACK.define("channel_gather(Tensor x, Tensor perm) -> Tensor", tags=_TAGS)
    _FALLBACK.define(
        "channel_gather.out(Tensor x, Tensor perm, *, Tensor(a!) out) -> ()", tags=_TAGS
    )

    def _fallback_check_entries(perm: torch.Tensor, c: int) -> None:
        if perm.numel() and not bool(((perm >= 0) & (perm < c)).all()):
            raise IndexError(f"channel_gather: perm entries must lie in [0, {c}) (C = x.size(1))")
        if not bool(is_permutation(perm)):  # as the C++ CPU kernel: the gradient needs it
            raise ValueError(
                f"channel_gather: perm must be a permutation of 0..{c - 1} (each index exactly "
                "once), got repeated entries"
            )

    def _fallback(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        _check_args(x, perm)
        _fallback_check_entries(perm, x.shape[1])
        return _empty_like_gather(x).copy_(x.index_select(1, perm))

    def _fallback_autograd(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        # The Autograd key: index_select carries reverse and forward mode and torch.func's
        # transforms (the compiled library has its own formulas, csrc/autograd.cpp).
        _check_args(x, perm)
        if _holds_values(perm):
            _fallback_check_entries(perm, x.shape[1])
        return x.index_select(1, perm).contiguous(memory_format=gather_memory_format(x))

    def _fallback_out(x: torch.Tensor, perm: torch.Tensor, *, out: torch.Tensor) -> None:
        _check_out(x, out)
        out.copy_(_fallback(x, perm))

    _FALLBACK.impl("channel_gather", _fallback, "CompositeExplicitAutograd")
    _FALLBACK.impl("channel_gather.out", _fallback_out, "CompositeExplicitAutograd")
    _FALLBACK.impl("channel_gather", _fallback_autograd, "Autograd")

_op = torch.ops.autoshuffle_ext.channel_gather


def _empty_like_gather(x: torch.Tensor) -> torch.Tensor:
    # torch.empty(memory_format=...) gives the strides at::empty does, also where the layout is
    # ambiguous (C == 1, H == W == 1), which `.contiguous(memory_format)` would not.
    return torch.empty(
        x.shape, dtype=x.dtype, device=x.device, memory_format=gather_memory_format(x)
    )


@torch.library.register_fake("autoshuffle_ext::channel_gather")
def _(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    _check_args(x, perm)
    return _empty_like_gather(x)


@torch.library.register_fake("autoshuffle_ext::channel_gather.out")
def _(x: torch.Tensor, perm: torch.Tensor, *, out: torch.Tensor) -> None:
    _check_args(x, perm)
    _check_out(x, out)


def is_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Whether each row of `perm` ([..., n], integer) holds every index 0..n-1 exactly once.

    Returns a bool tensor of shape perm.shape[:-1] on perm's device (True for n == 0).
    """
    identity = torch.arange(perm.shape[-1], device=perm.device)
    return (perm.sort(dim=-1).values == identity).all(dim=-1)


def _holds_values(t: torch.Tensor) -> bool:
    """Whether t's values can be read: False for meta and fake tensors (shapes and dtypes only)
    and for a tensor batched by `torch.func.vmap` (its batching rule checks the whole batch)."""
    return t.device.type != "meta" and not is_fake(t) and not is_batchedtensor(t)


def _gather_per_sample(x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """`out[i] = x[i][:, perms[i]]`: x of shape [B, N, C, ...], perms [B, C] (vmap over perm)."""
    if _holds_values(perms) and not bool(is_permutation(perms).all()):
        c = perms.shape[-1]
        raise ValueError(
            f"channel_gather: perm must be a permutation of 0..{c - 1} (each index exactly once) "
            "in every sample of the batch, got repeated or out-of-range entries"
        )
    index = perms.view(perms.shape[0], 1, perms.shape[1], *([1] * (x.dim() - 3)))
    return torch.gather(x, 2, index.expand(x.shape))


def _batch_first(t: torch.Tensor, dim: int | None, size: int) -> torch.Tensor:
    """A vmap argument with its batch at dim 0, expanded (no copy) when it is not batched."""
    return t.expand(size, *t.shape) if dim is None else t.movedim(dim, 0)


def _batch_after_channels(t: torch.Tensor, dim: int | None, size: int) -> torch.Tensor:
    """A vmap argument [N, C, ...] with its batch as dim 2, [N, C, B, ...] (no copy): a gather
    of the channels then permutes every sample at once."""
    if dim is None:
        return t.unsqueeze(2).expand(*t.shape[:2], size, *t.shape[2:])
    return t.movedim(dim, 2)


@torch.library.register_vmap("autoshuffle_ext::channel_gather")
def _(info, in_dims, x: torch.Tensor, perm: torch.Tensor):
    x_dim, perm_dim = in_dims
    if perm_dim is None:  # one perm for the whole batch: one gather
        return _op.default(_batch_after_channels(x, x_dim, info.batch_size), perm), 2
    x = _batch_first(x, x_dim, info.batch_size)
    return _gather_per_sample(x, perm.movedim(perm_dim, 0)), 0


def check_permutation(perm: torch.Tensor, num_channels: int, *, name: str = "perm") -> None:
    """Raises unless `perm` is a 1-D int64 tensor holding a permutation of 0..num_channels-1.

    A meta or fake perm has no values to check: only its type, dtype, dims and length are.

    Raises:
        TypeError: perm is not a tensor, or not int64.
        ValueError: wrong number of dims or length, or repeated / out-of-range entries.
    """
    if not isinstance(perm, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(perm).__name__}")
    if perm.dtype != torch.int64:
        raise TypeError(f"{name} must have dtype int64 (torch.long), got {perm.dtype}")
    if perm.dim() != 1:
        raise ValueError(
            f"{name} must be 1-D, got {perm.dim()} dims with shape {tuple(perm.shape)}"
        )
    if perm.numel() != num_channels:
        raise ValueError(f"{name} must have length {num_channels}, got {perm.numel()}")
    if _holds_values(perm) and not bool(is_permutation(perm)):
        shown = perm.tolist() if num_channels <= 32 else "repeated or out-of-range entries"
        raise ValueError(
            f"{name} must be a permutation of 0..{num_channels - 1} (each index exactly once), "
            f"got {shown}"
        )


def channel_gather(
    x: torch.Tensor,
    perm: torch.Tensor,
    *,
    validate: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Permutes the channels (dim 1) of `x`: `out[:, c, ...] = x[:, perm[c], ...]`.

    Args:
        x: tensor of shape [N, C, ...] (at least 2 dims), any dtype, contiguous, channels_last,
            channels_last_3d or strided. The result is dense in x's memory format (see
            `gather_memory_format`).
        perm: 1-D int64 tensor of length C on x's device, a permutation of 0..C-1 (each index
            exactly once; for a gather with repeated indices use `index_select`).
        validate: check here that perm is a permutation (a sort, and a host sync on CUDA; skipped
            while `torch.compile` traces, and for meta / fake tensors, which hold no values: their
            shapes and dtypes are still checked).
            validate=False, for hot loops, means the caller guarantees a permutation. The op
            still checks every entry: the CPU kernel that perm is a permutation (IndexError out
            of range, ValueError on a repeat), at no extra cost; the CUDA kernel only the range
            (device-side assert), so it never reads out of bounds, but a repeated entry there
            breaks the guarantee and gives a wrong gradient (the inverse gather assumes that
            every channel is read exactly once).
        out: optional destination with x's shape, dtype and device, any layout, sharing no memory
            with x or perm; returned. Not differentiable.

    Returns:
        The permuted tensor (or `out`). Differentiable in x: the gradient is the gather by the
        inverse permutation.

    Raises:
        TypeError: x or perm is not a tensor; perm is not int64; out has another dtype.
        ValueError: x has fewer than 2 dims; perm is not 1-D, has a length other than C or is on
            another device; perm is not a permutation (with validate; without it on the CPU,
            naming the repeated entry); out has another shape or device, or overlaps x or perm.
        IndexError: (validate=False) an entry of perm lies outside [0, C).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"channel_gather: x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(perm, torch.Tensor):
        raise TypeError(f"channel_gather: perm must be a torch.Tensor, got {type(perm).__name__}")
    _check_args(x, perm)
    if validate and not torch.compiler.is_compiling():
        check_permutation(perm, x.shape[1])
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"channel_gather: out must be a torch.Tensor, got {type(out).__name__}")
        _check_out(x, out)
        _op.out(x, perm, out=out)
        return out
    return _op.default(x, perm)


def fixed_shuffle_perm(
    num_channels: int, groups: int, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """ShuffleNet's channel shuffle as a perm: `perm[i * groups + j] = j * (C // groups) + i`.

    `channel_gather(x, fixed_shuffle_perm(C, g))` equals `F.channel_shuffle(x, g)`.

    Returns:
        1-D int64 tensor of length num_channels on `device`.

    Raises:
        TypeError: num_channels or groups is not an int (bool is not accepted).
        ValueError: groups < 1, num_channels < 0, or num_channels not divisible by groups.
    """
    for name, value in (("num_channels", num_channels), ("groups", groups)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    if num_channels < 0:
        raise ValueError(f"num_channels must be >= 0, got {num_channels}")
    if num_channels % groups:
        raise ValueError(
            f"num_channels must be divisible by groups, got num_channels={num_channels}, "
            f"groups={groups}"
        )
    per_group = num_channels // groups
    return (
        torch.arange(num_channels, device=device, dtype=torch.int64)
        .view(groups, per_group)
        .t()
        .reshape(-1)
    )


# The CPU kernels' paths (csrc/cpu/gather_plan.h): which one a call takes, and forcing one.


def _require_compiled_cpu(what: str, *tensors: torch.Tensor) -> None:
    if not extension_available():
        raise RuntimeError(f"{what}: needs the compiled library (autoshuffle_ext._C), not loaded")
    for t in tensors:
        if t.device.type != "cpu":
            raise ValueError(f"{what}: the paths are the CPU kernels', got a tensor on {t.device}")


def gather_path_names() -> list[str]:
    """The names of the CPU gather paths, shared by `channel_gather` and `cat_gather`.

    Plane copies of contiguous outputs with more than one element per channel (`planes`,
    `planes_avx2`, `planes_avx512`); pixel-row gathers of channels-last and [N, C] outputs: a
    scalar loop (`pixels`), hardware gathers (`pixels_gather_avx2`, `pixels_gather_avx512`), tile
    transposes (`pixels_transpose_avx2`), a pixel permuted in registers (`pixels_permute_avx512`),
    and a perm at or near a channel shuffle as the shuffle plus a patch (`near_shuffle_avx2`,
    `near_shuffle_avx512`). What each needs: the README, "CPU gather paths".

    Raises:
        RuntimeError: the compiled library is not loaded.
    """
    _require_compiled_cpu("gather_path_names")
    return list(torch.ops.autoshuffle_ext._gather_path_names())


def gather_path(x: torch.Tensor, perm: torch.Tensor) -> str:
    """The CPU path `channel_gather(x, perm)` takes now: one of `gather_path_names()`, or "none"
    for an empty x. For tests and bug reports.

    It follows the same planner as the op, so a forced path (`force_gather_path`,
    AUTOSHUFFLE_GATHER_PATH) shows, and one that does not apply raises here as there.

    Raises:
        RuntimeError: the compiled library is not loaded.
        ValueError: x is not on the CPU; the op's own errors for bad x or perm; a forced path
            that does not apply to this input.
    """
    _require_compiled_cpu("gather_path", x, perm)
    return torch.ops.autoshuffle_ext.channel_gather_path(x.detach(), perm)


@contextlib.contextmanager
def force_gather_path(path: str | None) -> Iterator[None]:
    """Forces the CPU gathers (`channel_gather` and `cat_gather`) onto `path` inside the block.

    `path` is a name of `gather_path_names()`, or several separated by commas (each gather runs
    the first that applies to its input), or "auto" (the automatic choice, whatever
    AUTOSHUFFLE_GATHER_PATH says), or None (back to AUTOSHUFFLE_GATHER_PATH, which forces the same
    way for a whole process). A gather whose input no forced path applies to raises ValueError
    naming each path and why, never falls back. Process-wide (every thread), not thread-safe
    against another `force_gather_path`; nested blocks restore the outer setting.

    Raises:
        RuntimeError: the compiled library is not loaded.
        ValueError: an unknown path name.
    """
    _require_compiled_cpu("force_gather_path")
    previous = torch.ops.autoshuffle_ext._force_gather_path(path)
    try:
        yield
    finally:
        torch.ops.autoshuffle_ext._force_gather_path(previous)
