"""Quadratic assignment at equal time: the penalty path with its batched restarts against scipy's
FAQ from K random starts, as gap to the best objective known here versus wall time.

`python bench/qap_time_quality.py [--instances 2] [--plot bench/qap_time_quality.png]` prints one
Markdown row per (kind, n, configuration): mean gap (objective / best known - 1, over the
instances) and median seconds per instance; "best known" is the least objective any run found
on that instance. Single-threaded BLAS and torch for both sides.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
from collections import defaultdict

import torch
from threadpoolctl import threadpool_limits

from autoshuffle_ext.matching import qaplib_like_instance, solve

FAQ_STARTS = (1, 4, 16, 64)
PATH_RESTARTS = (1, 4, 16)


def runs(F: torch.Tensor, D: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(objective, seconds) per configuration on one instance."""
    out = {}
    faq = [solve(F, D, "faq", seed=s, P0="randomized") for s in range(max(FAQ_STARTS))]
    for k in FAQ_STARTS:
        first = faq[:k]
        out[f"faq x{k}"] = (
            min(r.objective.item() for r in first),
            sum(r.seconds for r in first),
        )
    for r in PATH_RESTARTS:
        result = solve(F, D, "penalty", seed=0, restarts=r)
        out[f"penalty x{r}"] = (result.objective.item(), result.seconds)
    return out


def table(instances: int, sizes: tuple[int, ...]) -> tuple[list[str], dict]:
    rows = [
        "| kind | n | configuration | mean gap to best known | median s / instance |",
        "|---|---|---|---:|---:|",
    ]
    curves: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
    solve(*qaplib_like_instance(8, generator=torch.Generator().manual_seed(0)), "penalty")
    for kind in ("grid", "uniform", "clustered"):
        for n in sizes:
            gen = torch.Generator().manual_seed(7 * n)
            per_config: dict[str, list[tuple[float, float]]] = defaultdict(list)
            for _ in range(instances):
                F, D = qaplib_like_instance(n, kind, generator=gen)
                found = runs(F, D)
                best = min(obj for obj, _ in found.values())
                for name, (obj, seconds) in found.items():
                    per_config[name].append((obj / best - 1.0, seconds))
            curves[kind, n] = {}
            for name, values in per_config.items():
                gap = statistics.mean(g for g, _ in values)
                seconds = statistics.median(s for _, s in values)
                curves[kind, n][name] = (gap, seconds)
                rows.append(f"| {kind} | {n} | {name} | {gap:.4f} | {seconds:.3f} |")
                print(rows[-1], flush=True)
    return rows, curves


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted(curves)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for method, marker in (("faq", "o"), ("penalty", "s")):
            points = [(s, g) for name, (g, s) in curves[key].items() if name.startswith(method)]
            points.sort()
            ax.plot([s for s, _ in points], [g for _, g in points], marker=marker, label=method)
        ax.set(xscale="log", xlabel="seconds / instance", title=f"{key[0]} n={key[1]}")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean gap to best known")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--instances", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="+", default=[25, 50])
    p.add_argument("--plot", default=None, help="PNG of gap versus time per (kind, n)")
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, 1 thread"
    )
    with threadpool_limits(limits=1):
        _, curves = table(args.instances, tuple(args.sizes))
    if args.plot:
        plot(curves, args.plot)


if __name__ == "__main__":
    main()
