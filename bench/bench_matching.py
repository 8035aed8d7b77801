"""Graph matching / quadratic assignment: the penalty path vs the relaxation vs scipy.

Two uses:

* `pytest bench/bench_matching.py --benchmark-only`: time per solve (pytest-benchmark medians)
  on one planted instance per (n, noise), every solver side by side.
* `python bench/bench_matching.py [--trials 10]`: the tables of bench/RESULTS.md: exact
  recovery and median time per solver on planted graphs (n = 20, 50, 100; noise 0 to 0.1),
  QAPLIB-like instances (objective relative to FAQ), and the two-layer network.

Single-threaded BLAS and torch for both sides (the `one_thread` fixture of conftest.py under
pytest; `main` for the tables): on a shared 2-core machine, multi-threaded 100 x 100 products
mostly measure contention.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import pytest
import torch
from threadpoolctl import threadpool_limits

from autoshuffle_ext.matching import (
    SOLVERS,
    planted_instance,
    qaplib_like_instance,
    solve,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SIZES = (20, 50, 100)
NOISES = (0.0, 0.05, 0.1)


@pytest.mark.parametrize("method", SOLVERS)
@pytest.mark.parametrize("noise", [0.0, 0.05])
@pytest.mark.parametrize("n", SIZES)
def test_solve_time(benchmark, n: int, noise: float, method: str) -> None:
    if method == "2opt" and n == 100:
        pytest.skip("2opt at n=100 takes seconds per call")
    inst = planted_instance(n, 0.5, noise, generator=torch.Generator().manual_seed(n))
    benchmark.group = f"planted n={n} noise={noise}"
    benchmark(solve, inst.A, inst.B, method, maximize=True, seed=0)


def recovery_table(trials: int, solvers: tuple[str, ...]) -> list[str]:
    rows = [
        "| n | noise | "
        + " | ".join(f"{s} rec. | {s} ms" for s in solvers)
        + " | penalty / faq time |",
        "|---|---|" + "---|---|" * len(solvers) + "---|",
    ]
    warm = planted_instance(8, generator=torch.Generator().manual_seed(0))
    for method in solvers:
        solve(warm.A, warm.B, method, maximize=True)
    for n in SIZES:
        for noise in NOISES:
            gen = torch.Generator().manual_seed(1000 + n)
            insts = [planted_instance(n, 0.5, noise, generator=gen) for _ in range(trials)]
            cells, medians = [], {}
            for method in solvers:
                hits, times = 0, []
                for inst in insts:
                    r = solve(inst.A, inst.B, method, maximize=True, seed=0)
                    hits += bool(torch.equal(r.perm, inst.perm))
                    times.append(r.seconds * 1e3)
                medians[method] = statistics.median(times)
                cells += [f"{hits}/{trials}", f"{medians[method]:.1f}"]
            ratio = medians["penalty"] / medians["faq"]
            rows.append(f"| {n} | {noise} | " + " | ".join(cells) + f" | {ratio:.2f}x |")
            print(rows[-1], flush=True)
    return rows


def qap_table(instances: int) -> list[str]:
    """Objective / FAQ's per instance (lower is better), and wins/ties/losses against FAQ."""
    configs = {
        "penalty": ("penalty", {}),
        "penalty x8": ("penalty", {"restarts": 8}),
        "faq x8": ("faq", {"P0": "randomized"}),
        "2opt": ("2opt", {}),
    }
    rows = [
        "| kind | n | " + " | ".join(f"{c} obj/faq (w/t/l) | ms" for c in configs) + " | faq ms |",
        "|---|---|" + "---|---|" * len(configs) + "---|",
    ]
    for kind in ("grid", "uniform"):
        for n in (12, 25, 50):
            gen = torch.Generator().manual_seed(n)
            insts = [qaplib_like_instance(n, kind, generator=gen) for _ in range(instances)]
            faq = [solve(F, D, "faq", seed=0) for F, D in insts]
            cells = []
            for method, opts in configs.values():
                ratios, times, wins, ties, losses = [], [], 0, 0, 0
                for (F, D), ref in zip(insts, faq, strict=True):
                    if method == "faq":  # best of 8 randomized starts, the fair restart baseline
                        runs = [solve(F, D, "faq", seed=s, **opts) for s in range(8)]
                        obj = min(r.objective.item() for r in runs)
                        times.append(sum(r.seconds for r in runs) * 1e3)
                    else:
                        r = solve(F, D, method, seed=0, **opts)
                        obj = r.objective.item()
                        times.append(r.seconds * 1e3)
                    base = ref.objective.item()
                    ratios.append(obj / base)
                    wins, ties, losses = (
                        wins + (obj < base),
                        ties + (obj == base),
                        losses + (obj > base),
                    )
                cells += [
                    f"{statistics.mean(ratios):.4f} ({wins}/{ties}/{losses})",
                    f"{statistics.median(times):.1f}",
                ]
            faq_ms = statistics.median(r.seconds * 1e3 for r in faq)
            rows.append(f"| {kind} | {n} | " + " | ".join(cells) + f" | {faq_ms:.1f} |")
            print(rows[-1], flush=True)
    return rows


def two_layer_table(trials: int, starts: tuple[int, ...] = (1, 8)) -> list[str]:
    """Per (n, starts): recovery per run and with the least-loss start kept, mean loss at the
    rounded permutations, and where each method's M ends: P(M) / distance to its rounding."""
    from autoshuffle_ext.matching.two_layer import compare_penalty_relaxation

    rows = [
        "| n | d | trials | starts | penalty rec. (best start) | relaxation rec. (best start) | "
        "penalty loss | relaxation loss | relaxation final P(M) / dist. | "
        "penalty final P(M) / dist. | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, d in ((4, 16), (6, 20), (8, 32)):
        for s in starts:
            start = time.perf_counter()
            r = compare_penalty_relaxation(n, d, trials, starts=s, seed=0)
            seconds = time.perf_counter() - start
            rows.append(
                f"| {n} | {d} | {trials} | {s} | {r['penalty']:.3f} ({r['penalty_best']:.2f}) | "
                f"{r['relaxation']:.3f} ({r['relaxation_best']:.2f}) | "
                f"{r['penalty_loss']:.4f} | {r['relaxation_loss']:.4f} | "
                f"{r['relaxation_penalty']:.2f} / {r['relaxation_distance']:.2f} | "
                f"{r['penalty_penalty']:.2f} / {r['penalty_distance']:.3f} | {seconds:.1f} |"
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--qap-instances", type=int, default=5)
    p.add_argument("--two-layer-trials", type=int, default=50)
    p.add_argument("--skip", nargs="*", default=[], choices=["planted", "qap", "two-layer"])
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, 1 thread"
    )
    with threadpool_limits(limits=1):
        if "planted" not in args.skip:
            recovery_table(args.trials, ("penalty", "relaxation", "faq", "2opt"))
        if "qap" not in args.skip:
            qap_table(args.qap_instances)
        if "two-layer" not in args.skip:
            two_layer_table(args.two_layer_trials)


if __name__ == "__main__":
    main()
