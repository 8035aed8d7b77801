"""ShuffleNet inference with each shuffle variant, timed round-robin (bench/round_robin.py): one
forward of every variant in turn, so that a shared, noisy machine slows them alike. Prints the
median of the model without a shuffle ("none", the floor of what a shuffle can cost) and each
variant's ratio to it, one Markdown row per (batch, layout, mode). The variants are
bench_models.py's: fixed, none, frozen learned (random permutations, the worst case) and frozen
near-fixed (the fixed shuffle with 3 slot swaps per layer, where training from it ends).
`--mode compiled` times `torch.compile(fullgraph=True)` (inductor) models, compiled by two
warm-up calls outside the timing.

    python -m bench.inference_ratios [--model shufflenet_v2_x1_0] [--batch 1 32]
        [--layout nchw channels_last] [--mode eager compiled] [--rounds 40] [--threads 1]
        [--clock wall|thread]

`--clock thread` (one thread only) times the CPU time of the calling thread, which time slices
given to other jobs do not inflate.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.bench_models import LAYOUTS, inference_model
from bench.round_robin import round_robin

VARIANTS = ("none", "fixed", "frozen_learned", "frozen_near_fixed")
MODES = ("eager", "compiled")


def medians(name: str, batch: int, layout: str, mode: str, rounds: int, clock) -> dict[str, float]:
    """Median seconds per forward of each variant."""
    fmt = LAYOUTS[layout]
    x = torch.randn(batch, 3, 224, 224).contiguous(memory_format=fmt)
    fns = {}
    for variant in VARIANTS:
        model = inference_model(name, variant).to(memory_format=fmt).eval()
        if mode == "compiled":
            model = torch.compile(model, fullgraph=True)
        fns[variant] = lambda model=model: model(x)
    with torch.inference_mode():
        return round_robin(fns, rounds, warmup=2, clock=clock)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="shufflenet_v2_x1_0")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--layout", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--mode", nargs="+", choices=MODES, default=["eager"])
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
    print("| batch | layout | mode | none (ms) | fixed / none | frozen learned / none "
          "| frozen near-fixed / none |")  # fmt: skip
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for batch in args.batch:
        for layout in args.layout:
            for mode in args.mode:
                torch._dynamo.reset()
                m = medians(args.model, batch, layout, mode, args.rounds, clock)
                none, fixed, frozen, near = (m[v] * 1e3 for v in VARIANTS)
                print(
                    f"| {batch} | {layout} | {mode} | {none:.2f} | {fixed / none:.3f} | "
                    f"{frozen / none:.3f} | {near / none:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
