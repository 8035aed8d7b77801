"""channel_gather against what it replaces and what a user would write by hand.

One group per (device, shape, memory format, dtype) over ShuffleNet activation shapes, float32
and bfloat16:
the raw op (no per-call validation), `F.channel_shuffle` (the fixed shuffle it replaces),
`index_select`, advanced indexing `x[:, perm]`, and `x.clone()` (the memory-copy floor).
Runs on CUDA too when it is available (timed with a synchronize after each call).

    pytest bench/bench_channel_gather.py --benchmark-only --benchmark-min-rounds=200
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import autoshuffle_ext  # noqa: F401  (registers the op)
from tests.references import reference_channel_gather

OP = torch.ops.autoshuffle_ext.channel_gather.default

# (shape, groups of the ShuffleNet stage it comes from: v2 uses 2, v1 with g=3 uses 3)
SHAPES = [
    ((1, 116, 28, 28), 2),
    ((64, 240, 16, 16), 3),
    ((64, 480, 8, 8), 3),
    ((32, 232, 14, 14), 2),
]
FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def candidates(x: torch.Tensor, perm: torch.Tensor, groups: int):
    return {
        "channel_gather": lambda: OP(x, perm),
        "channel_shuffle": lambda: F.channel_shuffle(x, groups),
        "index_select": lambda: x.index_select(1, perm),
        "advanced_indexing": lambda: x[:, perm],
        "clone": lambda: x.clone(),
    }


CANDIDATES = ["channel_gather", "channel_shuffle", "index_select", "advanced_indexing", "clone"]


@pytest.mark.parametrize("candidate", CANDIDATES)
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("shape,groups", SHAPES, ids=["x".join(map(str, s)) for s, _ in SHAPES])
@pytest.mark.parametrize("device", DEVICES)
def test_channel_gather(benchmark, device, shape, groups, fmt, dtype, candidate):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(device, DTYPES[dtype])
    x = x.contiguous(memory_format=FORMATS[fmt])
    perm = torch.randperm(shape[1], generator=g).to(device)
    fn = candidates(x, perm, groups)[candidate]
    # Same values as the indexing reference, and the same layout as the input.
    if candidate == "channel_gather":
        y = fn()
        assert torch.equal(y, reference_channel_gather(x, perm))
        assert y.is_contiguous(memory_format=FORMATS[fmt])
    if device == "cuda":
        inner = fn

        def fn():
            inner()
            torch.cuda.synchronize()

    benchmark.group = f"{device} {'x'.join(map(str, shape))} {fmt} {dtype}"
    benchmark.extra_info.update(
        device=device, shape=list(shape), format=fmt, dtype=dtype, candidate=candidate
    )
    benchmark(fn)
