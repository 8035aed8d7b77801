"""What the per-ISA copies of the CPU kernels buy (csrc/cpu/vectorised.h): the projection,
`ell_mix` and the spline activation, timed in fresh processes at ATen's baseline capability
(`ATEN_CPU_CAPABILITY=default`: the baseline x86-64 copy) and at this CPU's own (AVX2 or
AVX-512), the processes alternating `--repeats` times; the median over processes of each one's
round-robin median.

Run: `python -m bench.isa_copies [--rounds 30] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

import torch

import autoshuffle_ext as asx
from autoshuffle_ext.ops.sparse_mix import ell_mix, sparse_mix_index
from bench.round_robin import round_robin


def _kernels() -> dict:
    """One call of each kernel on fixed random inputs (in-place ones on a fresh copy)."""
    g = torch.Generator().manual_seed(0)
    ops = torch.ops.autoshuffle_ext
    fns = {}
    for B, n in [(8, 96), (4, 192)]:
        start = torch.rand(B, n, n, generator=g) + 0.01
        work = torch.empty_like(start)
        fns[f"projection {B} x {n} x {n}"] = lambda s=start, w=work: ops.project_doubly_stochastic_(
            w.copy_(s), 10, 12
        )
    C = 96
    perm = asx.permutation_matrix(torch.randperm(C, generator=g))
    M = 0.8 * perm + 0.2 * perm.roll(1, 0)  # two non-zeros a row and a column
    rows, _ = sparse_mix_index(M)
    for fmt, name in [
        (torch.contiguous_format, "contiguous"),
        (torch.channels_last, "channels_last"),
    ]:
        x = torch.randn(64, C, 16, 16, generator=g).contiguous(memory_format=fmt)
        fns[f"ell_mix 64 x {C} x 16 x 16, width 2, {name}"] = lambda x=x: ell_mix(x, M, rows)
    coefficients = torch.randn(232, 21, generator=g)
    for fmt, name in [
        (torch.contiguous_format, "contiguous"),
        (torch.channels_last, "channels_last"),
    ]:
        x = torch.randn(64, 232, 14, 14, generator=g).contiguous(memory_format=fmt)
        dy = torch.randn_like(x)
        fns[f"spline forward 64 x 232 x 14 x 14, {name}"] = lambda x=x: ops.spline_activation(
            x, coefficients, 0.2
        )
        fns[f"spline backward 64 x 232 x 14 x 14, {name}"] = lambda x=x, dy=dy: (
            ops.spline_activation_backward(dy, x, coefficients, 0.2, True, True)
        )
    return fns


def _child(rounds: int) -> None:
    medians = round_robin(_kernels(), rounds)
    print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "medians": medians}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.rounds)
        return
    if not asx.extension_available():
        sys.exit("the compiled library is not loaded: nothing to time")
    native = torch.backends.cpu.get_cpu_capability()
    runs: dict[str, list[dict]] = {"DEFAULT": [], native: []}
    for _ in range(args.repeats):
        for capability in runs:
            env = {**os.environ, "ATEN_CPU_CAPABILITY": capability.lower()}
            out = subprocess.run(
                [sys.executable, "-m", "bench.isa_copies", "--child", "--rounds", str(args.rounds)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            result = json.loads(out.splitlines()[-1])
            runs[result["capability"]].append(result["medians"])
    names = list(runs["DEFAULT"][0])
    print(f"{torch.get_num_threads()} threads, {args.repeats} processes each, median ms")
    print(f"| kernel | baseline copy | {native} copy | baseline / {native} |")
    print("| --- | ---: | ---: | ---: |")
    for name in names:
        base = statistics.median(r[name] for r in runs["DEFAULT"]) * 1e3
        wide = statistics.median(r[name] for r in runs[native]) * 1e3
        print(f"| {name} | {base:.3f} | {wide:.3f} | {base / wide:.2f}x |")


if __name__ == "__main__":
    main()
