"""`autoshuffle-graphmatch`: the graph matching, QAPLIB and two-layer network examples.

autoshuffle-graphmatch --n 50 --noise 0.05 --trials 10          # planted graphs, a table
autoshuffle-graphmatch --qap instance.dat --json                # a QAPLIB file
autoshuffle-graphmatch --two-layer --n 6 --trials 10 --plot path.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .problems import matching_distance, planted_instance
from .qaplib import read_qaplib
from .solvers import SOLVERS, solve

_PATH_SOLVERS = ("penalty", "relaxation")  # the solvers that --restarts applies to

# Defaults of the numeric flags; the parser leaves them None, so that _check_args can tell a
# flag given from one left out.
_DEFAULTS = {
    "n": 50,
    "density": 0.5,
    "noise": 0.0,
    "trials": 10,
    "seed": 0,
    "restarts": 1,
    "starts": 1,
    "dim": 20,
}
# The flags each mode uses (--seed and --json apply to all); another mode's flag is an error.
_MODE_FLAGS = {
    "planted": ("n", "density", "noise", "trials", "solver", "restarts"),
    "qap": ("solver", "restarts"),
    "two-layer": ("n", "trials", "starts", "dim", "plot"),
}
_MODE_OPTION = {"qap": "--qap", "two-layer": "--two-layer"}


def _integer(low: int, high: int | None = None, high_text: str = "") -> Callable[[str], int]:
    """An argparse type: an int >= low (and <= high, written `high_text` in messages)."""
    expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high_text}]"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def _fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="autoshuffle-graphmatch",
        description="Graph matching / quadratic assignment: the l1-l2 penalty path vs the "
        "convex relaxation vs scipy's FAQ and 2-opt. Three modes: planted graphs (the default), "
        "--qap FILE, --two-layer; a flag of another mode is an error.",
    )
    d = _DEFAULTS
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--qap", metavar="FILE", help="solve a QAPLIB .dat instance (minimise)")
    mode.add_argument("--two-layer", action="store_true", help="the two-layer network example")
    p.add_argument(
        "--n", type=_integer(1), help=f"graph size (hidden units with --two-layer; {d['n']})"
    )
    p.add_argument("--density", type=_fraction, help=f"edge probability ({d['density']})")
    p.add_argument(
        "--noise", type=_fraction, help=f"fraction of vertex pairs flipped ({d['noise']})"
    )
    p.add_argument("--trials", type=_integer(1), help=f"instances per solver ({d['trials']})")
    # torch.Generator.manual_seed takes up to 2**64 - 1; numpy's generators refuse negatives.
    seed = _integer(0, 2**64 - 1, "2**64 - 1")
    p.add_argument("--seed", type=seed, help=f"random seed ({d['seed']})")
    p.add_argument(
        "--solver",
        choices=SOLVERS,
        action="append",
        help="repeatable; default all (not with --two-layer)",
    )
    p.add_argument(
        "--restarts",
        type=_integer(1),
        help=f"restarts of the path solvers penalty and relaxation ({d['restarts']})",
    )
    p.add_argument(
        "--starts", type=_integer(1), help=f"with --two-layer: starts per instance ({d['starts']})"
    )
    p.add_argument(
        "--dim", type=_integer(1), help=f"with --two-layer: input dimension ({d['dim']})"
    )
    p.add_argument("--plot", metavar="PNG", help="with --two-layer: loss and penalty per step")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Usage errors (exit code 2) for flags that do not apply to the mode or to the chosen
    solvers, and for a --plot path that cannot be written; then fills in the defaults."""
    mode = "qap" if args.qap is not None else "two-layer" if args.two_layer else "planted"
    for name in dict.fromkeys(n for names in _MODE_FLAGS.values() for n in names):
        if getattr(args, name) is None or name in _MODE_FLAGS[mode]:
            continue
        if mode == "planted":  # every flag the planted graphs do not use is --two-layer's
            parser.error(f"argument --{name}: only applies with --two-layer")
        parser.error(f"argument --{name}: not allowed with argument {_MODE_OPTION[mode]}")
    if args.restarts is not None and args.solver is not None:
        others = [s for s in args.solver if s not in _PATH_SOLVERS]
        if len(others) == len(args.solver):
            parser.error(
                "argument --restarts: applies to --solver penalty or relaxation, not to "
                + ", ".join(others)
            )
    if args.plot is not None:
        _check_plot_path(parser, Path(args.plot))
    for name, value in _DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _check_plot_path(parser: argparse.ArgumentParser, path: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        parser.error(
            "argument --plot: expected an image file name such as plot.png (one of "
            f"{', '.join(sorted(formats))}), got {path.name!r}"
        )
    folder = path.parent
    if not folder.is_dir():
        parser.error(f"argument --plot: folder {folder} does not exist")


class _FileError(Exception):
    """A file named by a flag that cannot be read or written: one line, exit code 2."""


def _check_magnitude(path: str, A: torch.Tensor, B: torch.Tensor) -> None:
    """_FileError unless the objective trace(A P B P^T) and the solvers' gradients (A P B^T),
    bounded by n^2 * max|A| * max|B|, stay finite in float64: larger finite entries (1e200)
    overflow inside the solvers."""
    n = A.shape[-1]
    a, b = A.abs().max().item(), B.abs().max().item()
    if a == 0 or b == 0:
        return
    largest = torch.finfo(torch.float64).max
    if 2 * math.log(n) + math.log(a) + math.log(b) > math.log(largest):
        raise _FileError(
            f"--qap {path}: expected entries whose products fit float64 (n^2 * max|A| * max|B| "
            f"<= {largest:.3g}), got n = {n}, max|A| = {a:.3g}, max|B| = {b:.3g}; scale A or B "
            "down (the best permutation stays the same)"
        )


def _read_qap(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) of the --qap file; _FileError names the flag, the file and what is wrong."""
    try:
        A, B = read_qaplib(path)
    except OSError as err:
        raise _FileError(f"--qap {path}: cannot read the file ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise _FileError(
            f"--qap {path}: expected a QAPLIB text file (UTF-8), got bytes that are not text "
            f"({err.reason} at offset {err.start})"
        ) from None
    except ValueError as err:  # most of parse_qaplib's messages start with the path
        message = str(err).removeprefix(f"{path}: ")
        raise _FileError(f"--qap {path}: {message}") from None
    _check_magnitude(path, A, B)
    return A, B


def _options(method: str, args: argparse.Namespace) -> dict:
    if method in ("penalty", "relaxation"):
        return {"restarts": args.restarts, "seed": args.seed}
    return {"seed": args.seed}


def _run_qap(args: argparse.Namespace, solvers: Sequence[str]) -> dict:
    A, B = _read_qap(args.qap)
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
        try:
            plot_path(paths, args.plot)
        except OSError as err:
            raise _FileError(f"--plot {args.plot}: cannot write ({err.strerror or err})") from None
        out["plot"] = args.plot
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line `argv` (sys.argv[1:] if None); returns the exit code.

    Raises:
        SystemExit: code 2 for a usage error (a flag value out of range, flags that do not
            apply together), with argparse's usage line and one error line on stderr.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _check_args(parser, args)
    solvers = args.solver or list(SOLVERS)
    try:
        if args.two_layer:
            out = _run_two_layer(args)
        elif args.qap is not None:
            out = _run_qap(args, solvers)
        else:
            out = _run_planted(args, solvers)
    except _FileError as err:
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
    elif args.qap is not None:
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
