"""Every launch configuration that the Triton launchers choose, found by running the launchers.

The launchers of `mixing.py`, `penalty.py`, `spline.py` and `ell_mix.py` pick block sizes, dtypes
and constexpr switches from their inputs. `recorded_launches()` runs each launcher over the inputs
the ops can hand it (every dtype pair that `autoshuffle_ext.ops` routes to Triton, both memory
formats, every combination of optional outputs, every matmul precision setting, channel counts at
and around each power of two up to 4096, every bin block of the spline backward) on meta tensors,
with the module's `@triton.jit` kernels swapped for recorders, and returns one launch per distinct
configuration: kernel, constexpr arguments, pointer dtypes. The list follows the launchers' code: a
new block choice, dtype or kernel shows up here by itself.

Nothing is computed and no GPU is needed; `gpu_compile.py` compiles the launches for GPU targets.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import triton

from . import ell_mix, mixing, penalty, spline

__all__ = ["KERNEL_MODULES", "Launch", "kernels_of", "recorded_launches"]

KERNEL_MODULES = (penalty, mixing, spline, ell_mix)

# Channel counts that the launchers are driven with: each power of two up to 4096 and its
# neighbours, so that every threshold at a power of two (next_power_of_2, min/max clamps) is seen
# from both sides. Powers of two come first: the first launch of a configuration is the one kept,
# and its divisibility specialisations are those of the common, aligned case.
_POWERS = [2**k for k in range(13)]
CHANNELS = _POWERS + sorted({c for p in _POWERS for c in (p - 1, p + 1) if c > 0} - set(_POWERS))
# SM counts of the GPUs in gpu_compile.TARGETS (A100, H100): the split-K choice of the backward
# depends on them.
SM_COUNTS = (108, 132)
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass
class Launch:
    """One recorded `kernel[grid](*args, **kwargs)` call."""

    kernel: Any  # triton.runtime.jit.JITFunction
    grid: Any
    args: tuple
    kwargs: dict
    source: str = ""  # the launcher call that made it, for messages
    constexprs: dict = field(default_factory=dict)
    dtypes: tuple = ()

    @property
    def name(self) -> str:
        return self.kernel.fn.__name__

    def key(self) -> tuple:
        """What tells two configurations apart: kernel, constexprs, pointer dtypes, options."""
        options = tuple(sorted((k, v) for k, v in self.kwargs.items() if k in _OPTION_NAMES))
        return (self.name, tuple(self.constexprs.items()), self.dtypes, options)

    def label(self) -> str:
        consts = " ".join(f"{k}={v}" for k, v in self.constexprs.items())
        return f"{self.name}[{'/'.join(self.dtypes)}] {consts}"


_OPTION_NAMES = ("num_warps", "num_stages", "num_ctas", "maxnreg")


def kernels_of(module) -> dict[str, Any]:
    """The launchable `@triton.jit` functions of a kernel module: those no other jit function of
    the module calls (the rest are device helpers, inlined into the kernels)."""
    jit = {
        name: obj
        for name, obj in vars(module).items()
        if isinstance(obj, triton.runtime.jit.JITFunction) and obj.fn.__module__ == module.__name__
    }
    sources = {name: fn.src for name, fn in jit.items()}
    helpers = set()
    for name in jit:
        for other, src in sources.items():
            if other != name and f"{name}(" in src:
                helpers.add(name)
    return {name: fn for name, fn in jit.items() if name not in helpers}


class _Recorder:
    def __init__(self, kernel, sink: list[Launch], source: Callable[[], str]):
        self.kernel, self.sink, self.source = kernel, sink, source

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.sink.append(Launch(self.kernel, grid, args, kwargs, self.source(0)))

        return launch


@contextlib.contextmanager
def _recording(sink: list[Launch], source: Callable[[int], str], sms: int) -> Iterator[None]:
    """Swaps every kernel of KERNEL_MODULES for a recorder (and mixing's SM count), restores them
    after: the jit helpers are looked up in the same globals when a kernel is compiled."""
    saved = []
    try:
        for module in KERNEL_MODULES:
            for name, kernel in kernels_of(module).items():
                saved.append((module, name, kernel))
                setattr(module, name, _Recorder(kernel, sink, source))
        saved.append((mixing, "_num_sms", mixing._num_sms))
        mixing._num_sms = lambda device: sms
        yield
    finally:
        for module, name, obj in reversed(saved):
            setattr(module, name, obj)


@contextlib.contextmanager
def _matmul_precision(value: str) -> Iterator[None]:
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(value)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def _mix_dtype_pairs() -> list[tuple[torch.dtype, torch.dtype]]:
    """(x dtype, M dtype) pairs that shuffle_mix accepts and sends to the Triton kernels on CUDA:
    the ops' own checks decide."""
    from autoshuffle_ext.ops import mixing as mix_op

    pairs = []
    for x_dtype, m_dtype in itertools.product(FLOAT_DTYPES, repeat=2):
        x = torch.empty(1, 2, 1, device="meta", dtype=x_dtype)
        try:
            mix_op.check_mix_inputs(x, torch.empty(2, 2, device="meta", dtype=m_dtype))
        except (TypeError, ValueError):
            continue
        if mix_op._use_triton(x):
            pairs.append((x_dtype, m_dtype))
    return pairs


def _penalty_dtypes() -> list[torch.dtype]:
    """M dtypes that l1l2_penalty sends to the Triton kernels on CUDA (the op's own check)."""
    from autoshuffle_ext.ops import penalty as penalty_op

    return [d for d in FLOAT_DTYPES if penalty_op._use_triton(torch.empty(2, 2, device="meta",
                                                                          dtype=d))]  # fmt: skip


def _spline_dtypes() -> list[torch.dtype]:
    """x dtypes that spline_activation sends to the Triton kernels on CUDA (the op's own checks;
    the kernels read the knots in float32 whatever their dtype)."""
    from autoshuffle_ext.ops import spline_activation as spline_op

    dtypes = []
    for dtype in FLOAT_DTYPES:
        x = torch.empty(1, 2, 1, device="meta", dtype=dtype)
        c = torch.empty(2, 51, device="meta", dtype=dtype)
        try:
            spline_op.check_spline_inputs(x, c, 0.1)
        except (TypeError, ValueError):
            continue
        if spline_op._use_triton(x, c):
            dtypes.append(dtype)
    return dtypes


def _spline_knots() -> list[int]:
    """Knot counts that give every bin block of the spline backward, up to spline.MAX_KNOTS."""
    counts = range(2, spline.MAX_KNOTS + 1)
    return sorted({spline.bin_block(k): k for k in reversed(counts)}.values())


def _ell_dtype_pairs() -> list[tuple[torch.dtype, torch.dtype]]:
    """(x dtype, A dtype) pairs of the sparse mixing kernel: x float16/bfloat16/float32, A float32
    or x's dtype (the contract of `autoshuffle_ext.ops.ell_reference`)."""
    pairs = []
    for x_dtype in (torch.float32, torch.bfloat16, torch.float16):
        pairs += [(x_dtype, a_dtype) for a_dtype in dict.fromkeys((torch.float32, x_dtype))]
    return pairs


# Image sizes of the sparse mixing drive: the pixels-inner tile follows the pixel count (16 to
# 128 pixels per run), so counts at, below and above each of those powers of two are driven;
# powers of two first (the kept launch of a configuration is the first, aligned one).
_ELL_IMAGES = ((4, 4), (4, 8), (8, 8), (8, 16), (16, 16), (1, 1), (3, 5), (5, 5), (7, 7), (9, 9),
               (14, 14))  # fmt: skip


def _empty(shape, dtype, channels_last=False) -> torch.Tensor:
    t = torch.empty(shape, device="meta", dtype=dtype)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


def _drive_penalty(C: int, dtype: torch.dtype) -> Iterator[str]:
    for shape in ((C, C), (3, C, C)):
        M = _empty(shape, dtype)
        yield f"penalty_forward(M{list(shape)} {dtype})"
        _, row, col = penalty.penalty_forward(M)
        yield f"penalty_backward(M{list(shape)} {dtype})"
        penalty.penalty_backward(_empty(shape[:-2], dtype), M, row, col)


def _drive_mixing(C: int, x_dtype: torch.dtype, m_dtype: torch.dtype) -> Iterator[str]:
    # [N, C, 16, 16]: 4 pixel blocks per image, so that the dM reduction can be split.
    for channels_last in (False, True):
        x = _empty((2, C, 16, 16), x_dtype, channels_last)
        M = _empty((C, C), m_dtype)
        what = (
            f"x[2, {C}, 16, 16] {x_dtype}{' channels_last' if channels_last else ''}, M {m_dtype}"
        )
        yield f"shuffle_mix_forward({what})"
        _, _, row, col = mixing.shuffle_mix_forward(x, M, torch.empty_like(x))
        for grad_p, (dx, dm) in itertools.product(
            (None, _empty((), m_dtype)),
            ((torch.empty_like(x), torch.empty_like(M)), (None, torch.empty_like(M)),
             (torch.empty_like(x), None)),
        ):  # fmt: skip
            yield (f"shuffle_mix_backward({what}, grad_p={grad_p is not None}, "
                   f"dx={dx is not None}, dm={dm is not None})")  # fmt: skip
            mixing.shuffle_mix_backward(x, grad_p, x, M, row, col, dx, dm)


def _drive_spline(C: int, dtype: torch.dtype) -> Iterator[str]:
    for channels_last in (False, True):
        x = _empty((2, C, 16, 16), dtype, channels_last)
        what = f"x[2, {C}, 16, 16] {dtype}{' channels_last' if channels_last else ''}"
        yield f"spline_forward({what}, K=51)"
        spline.spline_forward(x, _empty((C, 51), torch.float32), 0.1, torch.empty_like(x))
        for K in _spline_knots():
            c = _empty((C, K), torch.float32)
            for dx, need_dc in ((torch.empty_like(x), True), (None, True),
                                (torch.empty_like(x), False)):  # fmt: skip
                yield (f"spline_backward({what}, K={K}, dx={dx is not None}, "
                       f"need_dc={need_dc})")  # fmt: skip
                spline.spline_backward(x, x, c, 0.1, dx, need_dc)


def _drive_ell_mix(C: int, x_dtype: torch.dtype, a_dtype: torch.dtype) -> Iterator[str]:
    # K is not specialised (do_not_specialize): K = 1 and K = 3 compile the same kernel. A = M
    # (the forward) comes first, then the transposed view M.t() of the input gradient.
    # Channels-last first: a 1x1 contiguous x also takes the channels-inner tile, and the kept
    # launch of a configuration should be that of a real image.
    for channels_last, (h, w), K, transpose in itertools.product(
        (True, False), _ELL_IMAGES, (1, 3), (False, True)
    ):
        x = _empty((2, C, h, w), x_dtype, channels_last)
        A = _empty((C, C), a_dtype)
        A = A.t() if transpose else A
        index = _empty((C, K), torch.int64)
        yield (f"ell_mix_forward(x[2, {C}, {h}, {w}] {x_dtype}"
               f"{' channels_last' if channels_last else ''}, A{'.t()' if transpose else ''} "
               f"{a_dtype}, K={K})")  # fmt: skip
        ell_mix.ell_mix_forward(x, A, index, torch.empty_like(x))


def _drivers() -> Iterator[tuple[str, Iterator[str]]]:
    """(matmul precision, launcher run) pairs; each run yields a description before each call."""
    for precision in ("highest", "high"):
        for C in CHANNELS:
            for dtype in _penalty_dtypes():
                yield precision, _drive_penalty(C, dtype)
            for x_dtype, m_dtype in _mix_dtype_pairs():
                yield precision, _drive_mixing(C, x_dtype, m_dtype)
            if precision == "highest":  # no matmul in the spline kernels
                for dtype in _spline_dtypes():
                    yield precision, _drive_spline(C, dtype)
    # No matmul in the sparse mixing kernel. Channel counts from 16 on first: the kept launch of a
    # configuration then has no channel count specialised to 1.
    for C in sorted(CHANNELS, key=lambda c: c < 16):
        for x_dtype, a_dtype in _ell_dtype_pairs():
            yield "highest", _drive_ell_mix(C, x_dtype, a_dtype)


def recorded_launches() -> list[Launch]:
    """One launch per distinct configuration that the launchers choose, first one seen kept.

    Configurations are told apart by kernel, constexpr arguments, tensor dtypes and launch
    options. What triton specialises by value (an integer argument equal to 1 or divisible by 16,
    pointer alignment) is that of the launch kept. Raises RuntimeError when a kernel of
    KERNEL_MODULES is never launched: the drive below must then learn its launcher.
    """
    seen: dict[tuple, Launch] = {}
    for sms in SM_COUNTS:
        for precision, driver in _drivers():
            sink: list[Launch] = []
            current = [""]
            with _matmul_precision(precision), _recording(sink, current.__getitem__, sms):
                for what in driver:
                    current[0] = what
            for launch in sink:
                _describe(launch)
                seen.setdefault(launch.key(), launch)
    launched = {launch.name for launch in seen.values()}
    for module in KERNEL_MODULES:
        missing = sorted(set(kernels_of(module)) - launched)
        if missing:
            raise RuntimeError(f"{module.__name__}: {missing} never launched by the launchers "
                               "driven in kernels/launches.py")  # fmt: skip
    return list(seen.values())


def _describe(launch: Launch) -> None:
    """Fills launch.constexprs (constexpr parameters, by name) and launch.dtypes (the tensor
    arguments' element types in triton's spelling, in parameter order)."""
    params = launch.kernel.params
    values = dict(zip((p.name for p in params), launch.args, strict=False))
    values.update(launch.kwargs)
    launch.constexprs = {p.name: values[p.name] for p in params if p.is_constexpr}
    launch.dtypes = tuple(
        _TRITON_DTYPES[values[p.name].dtype]
        for p in params
        if isinstance(values.get(p.name), torch.Tensor)
    )


_TRITON_DTYPES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
    torch.int32: "i32",
    torch.int64: "i64",
}


def bind(launch: Launch, target) -> tuple[dict, list, dict]:
    """triton's binding of the launch's arguments for `target`: (bound arguments, specialisation
    [(type, attribute)] in parameter order, options), as JITFunction.run computes them."""
    binder = _binder(launch.kernel, target.backend, target.arch, target.warp_size)
    kwargs = dict(launch.kwargs)
    kwargs.setdefault("debug", False)
    return binder(*launch.args, **kwargs)


@functools.cache
def _binder(fn, backend_name: str, arch, warp_size: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget(backend_name, arch, warp_size))
    return create_function_from_signature(fn.signature, fn.params, backend)
