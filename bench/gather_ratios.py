"""The gather ops' ratios to the copy floor and to what they replace, timed round-robin
(bench/round_robin.py), random permutations, float32, one Markdown row per shape and format:

    python -m bench.gather_ratios [--rounds 300] [--threads 2] [--format nchw channels_last]
        [--dtype float32 bfloat16] [--perm random near]

channel_gather (the shapes of bench_channel_gather.py): its median in microseconds, then its
ratios to `clone()` (the floor: issue targets <= 1.10 NCHW, <= 1.30 channels_last), to
`F.channel_shuffle` (<= 1.05) and to `index_select` (<= 1 / 1.8). `--perm near` gathers by
F.channel_shuffle's own perm with 3 pairs of channels swapped (where a learned shuffle trained from
it ends), instead of a random perm. cat_gather (the shapes of
bench_cat_gather.py): its median, then its ratios to `torch.cat` alone (the floor: what a v2 unit
without a shuffle pays), to `torch.cat` + `channel_gather` and to `torch.cat` +
`F.channel_shuffle` (the two passes it replaces).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import autoshuffle_ext
from bench import bench_cat_gather, bench_channel_gather
from bench.round_robin import round_robin

GATHER = torch.ops.autoshuffle_ext.channel_gather.default
CAT_GATHER = torch.ops.autoshuffle_ext.cat_gather.default


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def near_shuffle_perm(c: int, groups: int, g: torch.Generator, swaps: int = 3) -> torch.Tensor:
    """F.channel_shuffle's perm of c channels with `swaps` random pairs of entries swapped."""
    perm = autoshuffle_ext.fixed_shuffle_perm(c, groups)
    for _ in range(swaps):
        i, j = torch.randperm(c, generator=g)[:2].tolist()
        perm[[i, j]] = perm[[j, i]]
    return perm


def gather_row(
    shape, groups: int, fmt, rounds: int, dtype=torch.float32, perm_kind: str = "random"
) -> str:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(dtype).contiguous(memory_format=fmt)
    if perm_kind == "near":
        perm = near_shuffle_perm(shape[1], groups, g)
    else:
        perm = torch.randperm(shape[1], generator=g)
    assert torch.equal(GATHER(x, perm), x[:, perm])
    m = round_robin(
        {
            "gather": lambda: GATHER(x, perm),
            "clone": lambda: x.clone(),
            "channel_shuffle": lambda: F.channel_shuffle(x, groups),
            "index_select": lambda: x.index_select(1, perm),
        },
        rounds,
    )
    return (
        f"{m['gather'] * 1e6:.0f} | {m['gather'] / m['clone']:.2f} | "
        f"{m['gather'] / m['channel_shuffle']:.2f} | {m['gather'] / m['index_select']:.2f}"
    )


def cat_gather_row(shape, fmt, rounds: int, dtype=torch.float32) -> str:
    n, c, h, w = shape
    g = torch.Generator().manual_seed(0)
    a, b = (
        torch.randn(n, c, h, w, generator=g).to(dtype).contiguous(memory_format=fmt) for _ in "ab"
    )
    perm = torch.randperm(2 * c, generator=g)
    assert torch.equal(CAT_GATHER(a, b, perm), torch.cat([a, b], 1)[:, perm])
    m = round_robin(
        {
            "cat_gather": lambda: CAT_GATHER(a, b, perm),
            "cat": lambda: torch.cat([a, b], 1),
            "cat+gather": lambda: GATHER(torch.cat([a, b], 1), perm),
            "cat+shuffle": lambda: F.channel_shuffle(torch.cat([a, b], 1), 2),
        },
        rounds,
    )
    t = m["cat_gather"]
    return (
        f"{t * 1e6:.0f} | {t / m['cat']:.2f} | {t / m['cat+gather']:.2f} | "
        f"{t / m['cat+shuffle']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    formats = bench_channel_gather.FORMATS
    parser.add_argument("--format", nargs="+", choices=list(formats), default=list(formats))
    parser.add_argument("--dtype", nargs="+", choices=list(DTYPES), default=["float32"])
    parser.add_argument("--perm", nargs="+", choices=["random", "near"], default=["random"])
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s), median of {args.rounds} round-robin rounds\n")
    print(
        "| channel_gather shape | format | dtype | perm | us | / clone | / channel_shuffle | "
        "/ index_select |"
    )
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    for dtype in args.dtype:
        for name in args.format:
            for kind in args.perm:
                for shape, groups in bench_channel_gather.SHAPES:
                    row = gather_row(shape, groups, formats[name], args.rounds, DTYPES[dtype], kind)
                    label = f"{'x'.join(map(str, shape))} | {name} | {dtype} | {kind}"
                    print(f"| {label} | {row} |", flush=True)
    print(
        "\n| cat_gather shape (each) | format | dtype | us | / cat | / cat+gather | / cat+shuffle |"
    )
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for dtype in args.dtype:
        for name in args.format:
            for shape in bench_cat_gather.SHAPES:
                row = cat_gather_row(shape, formats[name], args.rounds, DTYPES[dtype])
                print(f"| {'x'.join(map(str, shape))} | {name} | {dtype} | {row} |", flush=True)


if __name__ == "__main__":
    main()
