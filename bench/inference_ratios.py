"""ShuffleNet inference with each shuffle variant, timed round-robin: one forward of every variant
in turn, so that a shared, noisy machine slows them alike (pytest-benchmark times one variant
after the other, and drifts between them). Prints the median of each variant and its ratio to
the model without a shuffle ("none", the floor of what a shuffle can cost), one Markdown row per
(batch, layout). The variants are bench_models.py's: fixed, none, frozen learned.

    python -m bench.inference_ratios [--model shufflenet_v2_x1_0] [--batch 1 32]
        [--layout nchw channels_last] [--rounds 40] [--threads 1] [--clock wall|thread]

`--clock thread` (one thread only) times the CPU time of the calling thread, which time slices
given to other jobs do not inflate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.bench_models import LAYOUTS, inference_model

VARIANTS = ("none", "fixed", "frozen_learned")


def medians(name: str, batch: int, layout: str, rounds: int, clock) -> dict[str, float]:
    """Median seconds per forward of each variant, timed round-robin after two warm-up calls."""
    fmt = LAYOUTS[layout]
    models = {v: inference_model(name, v).to(memory_format=fmt).eval() for v in VARIANTS}
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=fmt)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with torch.inference_mode():
        for model in models.values():
            model(x)
            model(x)
        for _ in range(rounds):
            for variant, model in models.items():
                start = clock()
                model(x)
                times[variant].append(clock() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shufflenet_v2_x1_0")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--layout", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        parser.error("--clock thread needs one thread (--threads 1)")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    print(
        f"{args.model}, 224x224, {torch.get_num_threads()} thread(s), {args.clock} clock, "
        f"median of {args.rounds} round-robin rounds"
    )
    print("| batch | layout | none (ms) | fixed / none | frozen learned / none |")
    print("| --- | --- | --- | --- | --- |")
    for batch in args.batch:
        for layout in args.layout:
            m = medians(args.model, batch, layout, args.rounds, clock)
            print(
                f"| {batch} | {layout} | {m['none'] * 1e3:.2f} | {m['fixed'] / m['none']:.3f} | "
                f"{m['frozen_learned'] / m['none']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
