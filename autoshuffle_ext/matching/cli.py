"""`autoshuffle-graphmatch`: the graph matching, QAPLIB and two-layer network examples.

autoshuffle-graphmatch --n 50 --noise 0.05 --trials 10          # planted graphs, a table
autoshuffle-graphmatch --qap instance.dat --json                # a QAPLIB file
autoshuffle-graphmatch --two-layer --n 6 --trials 10 --plot path.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from .problems import matching_distance, planted_instance
from .qaplib import read_qaplib
from .solvers import SOLVERS, solve


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autoshuffle-graphmatch",
        description="Graph matching / quadratic assignment: the l1-l2 penalty path vs the "
        "convex relaxation vs scipy's FAQ and 2-opt.",
    )
    p.add_argument("--n", type=int, default=50, help="graph size (hidden units with --two-layer)")
    p.add_argument("--density", type=float, default=0.5, help="edge probability")
    p.add_argument("--noise", type=float, default=0.0, help="fraction of vertex pairs flipped")
    p.add_argument("--trials", type=int, default=10, help="instances per solver")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--solver", choices=SOLVERS, action="append", help="repeatable; default all")
    p.add_argument("--restarts", type=int, default=1, help="restarts of the path solvers")
    p.add_argument("--starts", type=int, default=1, help="starts per instance with --two-layer")
    p.add_argument("--qap", metavar="FILE", help="solve a QAPLIB .dat instance (minimise)")
    p.add_argument("--two-layer", action="store_true", help="the two-layer network example")
    p.add_argument("--dim", type=int, default=20, help="input dimension with --two-layer")
    p.add_argument("--plot", metavar="PNG", help="with --two-layer: loss and penalty per step")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _options(method: str, args: argparse.Namespace) -> dict:
    if method in ("penalty", "relaxation"):
        return {"restarts": args.restarts, "seed": args.seed}
    return {"seed": args.seed}


def _run_qap(args: argparse.Namespace, solvers: Sequence[str]) -> dict:
    A, B = read_qaplib(args.qap)
    for method in solvers:  # first calls load libraries; keep that out of the timings
        solve(A[:2, :2], B[:2, :2], method)
    out = {}
    for method in solvers:
        out[method] = solve(A, B, method, **_options(method, args)).to_dict()
    return out


def _run_planted(args: argparse.Namespace, solvers: Sequence[str]) -> dict:
    gen = torch.Generator().manual_seed(args.seed)
    instances = [
        planted_instance(args.n, args.density, args.noise, generator=gen)
        for _ in range(args.trials)
    ]
    warm = planted_instance(8, generator=torch.Generator().manual_seed(0))
    for method in solvers:  # first calls load libraries; keep that out of the timings
        solve(warm.A, warm.B, method, maximize=True)
    out = {}
    for method in solvers:
        recovered, distance, seconds = 0, 0.0, 0.0
        for inst in instances:
            r = solve(inst.A, inst.B, method, maximize=True, **_options(method, args))
            recovered += bool(torch.equal(r.perm, inst.perm))
            distance += matching_distance(inst.A, inst.B, r.perm).item()
            seconds += r.seconds
        out[method] = {
            "recovery_rate": recovered / args.trials,
            "mean_distance": distance / args.trials,
            "mean_seconds": seconds / args.trials,
        }
    return out


def _run_two_layer(args: argparse.Namespace) -> dict:
    from .two_layer import compare_penalty_relaxation, plot_path, solve_two_layer, two_layer_problem

    out = compare_penalty_relaxation(
        args.n, args.dim, args.trials, starts=args.starts, seed=args.seed
    )
    if args.plot:
        problem = two_layer_problem(
            args.n, args.dim, generator=torch.Generator().manual_seed(args.seed)
        )
        paths = {
            name: solve_two_layer(problem, penalty=penalty, record=True)[1]
            for name, penalty in (("penalty", True), ("relaxation", False))
        }
        plot_path(paths, args.plot)
        out["plot"] = args.plot
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    solvers = args.solver or list(SOLVERS)
    try:
        if args.two_layer:
            out = _run_two_layer(args)
        elif args.qap:
            out = _run_qap(args, solvers)
        else:
            out = _run_planted(args, solvers)
    except (OSError, ValueError) as err:
        print(f"autoshuffle-graphmatch: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    if args.two_layer:
        print(
            f"two-layer network, n={args.n} hidden units, d={args.dim}, {args.trials} trials, "
            f"{args.starts} starts each"
        )
        for name in ("penalty", "relaxation"):
            print(
                f"  {name:<11} recovery {out[name]:.2f} (best start {out[name + '_best']:.2f})"
                f"   loss at rounding {out[name + '_loss']:.4g}"
                f"   final P(M) {out[name + '_penalty']:.3g}"
                f"   distance to rounding {out[name + '_distance']:.3g}"
            )
        if args.plot:
            print(f"  plot: {args.plot}")
    elif args.qap:
        print(f"{'solver':<11} {'objective':>14} {'seconds':>9}  permutation (0-based)")
        for name, r in out.items():
            perm = " ".join(map(str, r["permutation"]))
            print(f"{name:<11} {r['objective']:>14.6g} {r['seconds']:>9.4f}  {perm}")
    else:
        print(
            f"planted graphs: n={args.n} density={args.density} noise={args.noise} "
            f"trials={args.trials} seed={args.seed}"
        )
        print(f"{'solver':<11} {'recovered':>9} {'mean ||A-PBP^T||^2':>19} {'mean seconds':>13}")
        for name, r in out.items():
            print(
                f"{name:<11} {r['recovery_rate']:>9.2f} {r['mean_distance']:>19.2f} "
                f"{r['mean_seconds']:>13.4f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
