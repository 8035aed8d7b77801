"""cat_gather against the two passes it replaces and against the concat alone.

One group per (device, shape, memory format) over ShuffleNet v2 1.0x units' concat + shuffle
([N, Ca + Cb, H, W], float32): the raw op (no per-call validation), `torch.cat` then
`channel_gather` (today's frozen path), `torch.cat` then `F.channel_shuffle` (today's fixed
path), and `torch.cat` alone (the floor: what a model without a shuffle pays). Runs on CUDA too
when it is available (timed with a synchronize after each call).

    pytest bench/bench_cat_gather.py --benchmark-only --benchmark-min-rounds=200
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import autoshuffle_ext  # noqa: F401  (registers the ops)
from bench.timing import sync
from tests.references import reference_cat_gather

OP = torch.ops.autoshuffle_ext.cat_gather.default
GATHER = torch.ops.autoshuffle_ext.channel_gather.default

# (N, channels of each branch, H, W): the three stages of ShuffleNet v2 1.0x at 224x224.
SHAPES = [(1, 58, 28, 28), (32, 116, 14, 14), (64, 232, 7, 7)]
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
CANDIDATES = ["cat_gather", "cat+channel_gather", "cat+channel_shuffle", "cat"]


def candidates(a: torch.Tensor, b: torch.Tensor, perm: torch.Tensor):
    return {
        "cat_gather": lambda: OP(a, b, perm),
        "cat+channel_gather": lambda: GATHER(torch.cat([a, b], 1), perm),
        "cat+channel_shuffle": lambda: F.channel_shuffle(torch.cat([a, b], 1), 2),
        "cat": lambda: torch.cat([a, b], 1),
    }


def _name(shape) -> str:
    n, c, h, w = shape
    return f"{n}x({c}+{c})x{h}x{w}"


@pytest.mark.parametrize("candidate", CANDIDATES)
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("shape", SHAPES, ids=_name)
@pytest.mark.parametrize("device", DEVICES)
def test_cat_gather(benchmark, device, shape, fmt, candidate):
    n, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(n, c, h, w, generator=g).to(device).contiguous(memory_format=FORMATS[fmt])
        for _ in range(2)
    )
    perm = torch.randperm(2 * c, generator=g).to(device)
    fn = candidates(a, b, perm)[candidate]
    # Same values as the reference, and the inputs' layout.
    if candidate == "cat_gather":
        y = fn()
        assert torch.equal(y, reference_cat_gather(a, b, perm))
        assert y.is_contiguous(memory_format=FORMATS[fmt])
    if device == "cuda":
        inner = fn

        def fn():
            inner()
            sync(device)

    benchmark.group = f"{device} {_name(shape)} {fmt}"
    benchmark.extra_info.update(device=device, shape=list(shape), format=fmt, candidate=candidate)
    benchmark(fn)
