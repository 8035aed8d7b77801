"""channel_gather's ratios to the copy floor and to what it replaces, timed round-robin: one call of
every candidate in turn, so that a shared, noisy machine slows them alike (pytest-benchmark times
one candidate after the other and drifts between them). One Markdown row per (shape, format) of
bench_channel_gather.py, random permutation, float32:

    python -m bench.gather_ratios [--rounds 300] [--threads 2] [--format nchw channels_last]

Columns: the median of channel_gather in microseconds, then its ratios to `clone()` (the floor:
issue targets <= 1.10 NCHW, <= 1.30 channels_last), to `F.channel_shuffle` (<= 1.05) and to
`index_select` (<= 1 / 1.8).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

import autoshuffle_ext  # noqa: F401  (registers the op)
from bench.bench_channel_gather import FORMATS, SHAPES

OP = torch.ops.autoshuffle_ext.channel_gather.default


def medians(shape, groups: int, fmt, rounds: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).contiguous(memory_format=fmt)
    perm = torch.randperm(shape[1], generator=g)
    assert torch.equal(OP(x, perm), x[:, perm])
    fns = {
        "gather": lambda: OP(x, perm),
        "clone": lambda: x.clone(),
        "channel_shuffle": lambda: F.channel_shuffle(x, groups),
        "index_select": lambda: x.index_select(1, perm),
    }
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(5):
            fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(t) for k, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--format", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s), median of {args.rounds} round-robin rounds")
    print("| shape | format | gather (us) | / clone | / channel_shuffle | / index_select |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for fmt_name in args.format:
        for shape, groups in SHAPES:
            m = medians(shape, groups, FORMATS[fmt_name], args.rounds)
            print(
                f"| {'x'.join(map(str, shape))} | {fmt_name} | {m['gather'] * 1e6:.0f} | "
                f"{m['gather'] / m['clone']:.2f} | {m['gather'] / m['channel_shuffle']:.2f} | "
                f"{m['gather'] / m['index_select']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
