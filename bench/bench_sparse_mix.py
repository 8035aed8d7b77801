"""The sparse mixing against the dense one as M converges: forward + backward (y, dX, dM) of
`sparse_mix` and of `shuffle_mix`, and the exact gather of the fixed shuffle, on the shuffle
shapes of ShuffleNet v1 g8 0.25x (CIFAR, batch 64), for M with `width` non-zeros in every row
and column (a sum of `width` permutations, doubly stochastic). The crossover sets
`LearnedShuffle`'s default `sparse_below`.

Run: `python -m pytest bench/bench_sparse_mix.py --benchmark-only`, or the round-robin table of
bench/RESULTS.md: `python -m bench.bench_sparse_mix --rounds 30`.
"""

from __future__ import annotations

import argparse

import pytest
import torch

import autoshuffle_ext as asx
from autoshuffle_ext.ops.channel_gather import channel_gather
from autoshuffle_ext.ops.mixing import shuffle_mix
from autoshuffle_ext.ops.sparse_mix import sparse_mix, sparse_mix_index
from bench.round_robin import round_robin
from bench.timing import sync
from tests.references import to_layout

DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
# [batch, C, H, W] of the shuffles of v1 g8 0.25x on 32x32 inputs (CIFAR stem), one per stage.
SHAPES = [(64, 24, 16, 16), (64, 48, 8, 8), (64, 96, 4, 4)]
WIDTHS = [1, 2, 4, 8]


def converged_matrix(C: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A doubly stochastic [C, C] with `width` non-zeros per row and column (generically): the
    mean of `width` random permutation matrices, one of them dominant."""
    perms = [torch.randperm(C, generator=generator) for _ in range(width)]
    weights = torch.tensor([4.0] + [1.0] * (width - 1))
    weights = weights / weights.sum()
    return sum(w * asx.permutation_matrix(p) for w, p in zip(weights, perms, strict=True))


def step_fns(shape, width: int, layout: str, device: str) -> dict:
    """The three candidates' forward + backward on one input, synced; not yet run."""
    g = torch.Generator().manual_seed(0)
    x = to_layout(torch.randn(shape, generator=g), layout).to(device).requires_grad_()
    M = converged_matrix(shape[1], width, g).to(device).requires_grad_()
    dy = to_layout(torch.randn(shape, generator=g), layout).to(device)
    perm = torch.randperm(shape[1], generator=g).to(device)

    def dense():
        y, p = shuffle_mix(x, M)
        torch.autograd.backward((y, p), (dy, torch.ones_like(p)))
        sync(device)

    def sparse():
        # As the module does: the index once per step (M changes every step).
        y, p = sparse_mix(x, M, *sparse_mix_index(M))
        torch.autograd.backward((y, p), (dy, torch.ones_like(p)))
        sync(device)

    def gather():
        channel_gather(x, perm).backward(dy)
        sync(device)

    return {"dense": dense, "sparse": sparse, "gather": gather}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("impl", ["dense", "sparse", "gather"])
def test_forward_backward(benchmark, impl, shape, width, layout, device):
    benchmark.group = f"mix fwd+bwd {shape} width {width} {layout} {device}"
    benchmark(step_fns(shape, width, layout, device)[impl])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"{torch.get_num_threads()} threads, {args.device}")
    print("| shape | layout | width (nnz/row) | dense ms | sparse ms | gather ms | dense/sparse |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for shape in SHAPES:
        for layout in ("contiguous", "channels_last"):
            for width in WIDTHS:
                med = round_robin(step_fns(shape, width, layout, args.device), args.rounds)
                print(
                    f"| {list(shape)} | {layout} | {width} | {med['dense'] * 1e3:.3f} | "
                    f"{med['sparse'] * 1e3:.3f} | {med['gather'] * 1e3:.3f} | "
                    f"{med['dense'] / med['sparse']:.2f}x |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
