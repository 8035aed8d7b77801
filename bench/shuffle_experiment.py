"""The paper's experiment in one command: ShuffleNet trained with the fixed, learned, random and
no shuffle (and recipes of the learned one), several seeds, as parallel training processes on one
machine or one GPU; then one report of the comparison, the curves, the group coverage of every
permutation and the density of the learned matrices.

    python -m bench.shuffle_experiment --data-dir DATA --epochs 30 --seeds 0,1,2 \\
        --parallel 4 --device cuda --out runs/experiment \\
        --recipe late="--shuffle-init uniform --penalty-start 0.5 --penalty-ramp 0.9"

Every run is `autoshuffle-train --compare <kind> --seeds <seed>` into `<out>/<folder>/` (`main`,
or the recipe's name), so the runs are the training program's own (checkpoints, metrics,
reports; the folder's own `comparison.md` lists only the run that finished last). Finished runs
are skipped and interrupted ones resumed, so a budget too short for the whole experiment is
spent in slices: `--stop-after-epochs K` advances every run by K epochs per call (a lent GPU
gives 10 minutes a command), and the same command again goes on. The report
(`<out>/experiment.md`, `.json`, `curves.png`) is written from whatever has finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from autoshuffle_ext.modules.coverage import group_coverage
from autoshuffle_ext.train.compare import format_seed_table, seed_summary
from autoshuffle_ext.train.metrics import atomic_write_text, strict_json
from autoshuffle_ext.train.report import pyplot
from autoshuffle_ext.train.result import RunResult

MAIN = "main"  # the variants run with the flags every run shares
_FIELDS = {f.name for f in dataclasses.fields(RunResult)}


@dataclasses.dataclass(frozen=True)
class Job:
    folder: str  # MAIN, or the recipe's name
    kind: str  # the --shuffle kind
    seed: int
    flags: tuple[str, ...]  # the recipe's flags

    @property
    def variant(self) -> str:
        return self.kind if self.folder == MAIN else f"{self.kind} ({self.folder})"

    def run_dir(self, out: Path) -> Path:
        return out / self.folder / self.kind / f"seed{self.seed}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True, help="CIFAR 'python version' folder")
    p.add_argument("--dataset", default="cifar10", help="cifar10 or cifar100 (default: cifar10)")
    p.add_argument("--model", default="shufflenet_v1_g8_x0_25")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", default="fixed,none,random,learned", help="--shuffle kinds")
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar='NAME="FLAGS"',
        help="a learned shuffle trained with these extra flags, reported as 'learned (NAME)'",
    )
    p.add_argument("--parallel", type=int, default=1, help="training processes at once")
    p.add_argument(
        "--threads", type=int, default=None, help="threads per process (default: cores/parallel)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/experiment"))
    p.add_argument("--stop-after-epochs", type=int, default=None, help="epochs per run this call")
    p.add_argument(
        "--train-flags",
        default="--channels-last",
        help="flags every run gets (default: %(default)s)",
    )
    p.add_argument("--report-only", action="store_true", help="write the report, train nothing")
    args = p.parse_args(argv)
    if args.parallel < 1:
        p.error(f"--parallel must be >= 1, got {args.parallel}")
    for recipe in args.recipe:
        if "=" not in recipe or not recipe.split("=", 1)[0].isidentifier():
            p.error(f'--recipe must be NAME="FLAGS" with NAME an identifier, got {recipe!r}')
    return args


def jobs_of(args: argparse.Namespace) -> list[Job]:
    """Seed-major: every variant of seed 0 first, so a cut-short experiment has whole seeds."""
    variants = [(MAIN, kind, ()) for kind in args.variants.split(",")]
    for recipe in args.recipe:
        name, flags = recipe.split("=", 1)
        variants.append((name, "learned", tuple(shlex.split(flags))))
    seeds = [int(s) for s in args.seeds.split(",")]
    return [Job(folder, kind, seed, flags) for seed in seeds for folder, kind, flags in variants]


def command(job: Job, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "autoshuffle_ext.train", "--model", args.model]
    cmd += ["--dataset", args.dataset, "--data-dir", args.data_dir, "--epochs", str(args.epochs)]
    cmd += ["--compare", job.kind, "--seeds", str(job.seed), "--device", args.device]
    cmd += ["--out", str(args.out / job.folder), "--no-progress"]
    cmd += shlex.split(args.train_flags) + list(job.flags)
    if args.stop_after_epochs is not None:
        cmd += ["--stop-after-epochs", str(args.stop_after_epochs)]
    if (job.run_dir(args.out) / "checkpoint.pt").exists():
        cmd.append("--resume")
    return cmd


def run_all(jobs: list[Job], args: argparse.Namespace) -> list[str]:
    """Runs the unfinished jobs, `args.parallel` at a time; returns the failed ones' names."""
    todo = [j for j in jobs if not (j.run_dir(args.out) / "result.json").exists()]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: dict[subprocess.Popen, Job] = {}
    failed = []
    print(f"{len(jobs) - len(todo)} of {len(jobs)} runs done; {len(todo)} to go", flush=True)
    try:
        _schedule(todo, running, failed, args, env, logs)
    finally:  # stopped (a timeout's SIGTERM, ^C): the training processes stop with the runner
        for proc in running:
            proc.terminate()
        for proc in running:
            proc.wait()
    return failed


def _schedule(todo, running, failed, args, env, logs) -> None:
    while todo or running:
        while todo and len(running) < args.parallel:
            job = todo.pop(0)
            with open(logs / f"{job.folder}-{job.kind}-seed{job.seed}.log", "a") as log:
                # The child holds its own handle to the log.
                proc = subprocess.Popen(
                    command(job, args), stdout=log, stderr=subprocess.STDOUT, env=env
                )
            running[proc] = job
            print(f"started {job.variant} seed {job.seed}", flush=True)
        time.sleep(1.0)
        for proc in [p for p in running if p.poll() is not None]:
            job = running.pop(proc)
            status = "finished" if proc.returncode == 0 else f"FAILED ({proc.returncode})"
            if proc.returncode != 0:
                failed.append(f"{job.variant} seed {job.seed}")
            print(f"{status} {job.variant} seed {job.seed}", flush=True)


def _load(job: Job, out: Path) -> tuple[RunResult, list[dict], dict] | None:
    """(result renamed to the job's variant, metrics rows, {site: perm} of its exact shuffles)
    of a finished run."""
    run_dir = job.run_dir(out)
    if not (run_dir / "result.json").exists():
        return None
    record = json.loads((run_dir / "result.json").read_text())
    result = RunResult(**{k: v for k, v in record.items() if k in _FIELDS})
    result = dataclasses.replace(result, variant=job.variant)
    history = json.loads((run_dir / "metrics.json").read_text())
    # The run's own checkpoint (the training program wrote it): the unfolded model's perms.
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    perms = {k.removesuffix(".perm"): v for k, v in state["model"].items() if k.endswith(".perm")}
    return result, history, perms


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {std:.4f}"


def coverage_rows(runs: dict[str, list], sites: dict[str, tuple[int, int]]) -> list[dict]:
    """Per variant with permutations (learned: rounded; random: drawn): the distribution of
    group coverage over every output group of every shuffle and seed, the share that reads
    every group it can (`min(groups, C // groups)`, what the fixed shuffle gives), and the
    mean per shuffle site."""
    rows = []
    for variant, items in runs.items():
        per_site: dict[str, list[int]] = {}
        full = 0
        for result, _, perms in items:
            learned = {r["name"]: r["coverage"] for r in result.layers if r.get("coverage")}
            for site, (groups, channels) in sites.items():
                if site in learned:
                    cover = learned[site]
                elif site in perms:
                    cover = group_coverage(perms[site], groups).tolist()
                else:
                    continue
                per_site.setdefault(site, []).extend(cover)
                full += sum(c >= min(groups, channels // groups) for c in cover)
        if not per_site:
            continue
        every = [c for values in per_site.values() for c in values]
        top = max(groups for groups, _ in sites.values())
        rows.append(
            {
                "variant": variant,
                "histogram": {c: every.count(c) for c in range(1, top + 1)},
                "mean": statistics.fmean(every),
                "full": full / len(every),
                "per_site": {s: statistics.fmean(v) for s, v in per_site.items()},
            }
        )
    return rows


def report(jobs: list[Job], args: argparse.Namespace) -> str:
    """Writes `<out>/experiment.md`, `.json` and `curves.png` from the finished runs."""
    runs: dict[str, list] = {}
    for job in jobs:
        loaded = _load(job, args.out)
        if loaded is not None:
            runs.setdefault(job.variant, []).append(loaded)
    results = [r for items in runs.values() for r, _, _ in items]
    if not results:
        return "no finished runs yet"
    sites = {  # name: (groups, channels) of every shuffle a learned variant reported on
        layer["name"]: (len(layer["coverage"]), layer["channels"])
        for r in results
        for layer in r.layers
        if layer.get("coverage")
    }
    lines = [
        f"# {args.model} on {args.dataset} ({args.data_dir}), {args.epochs} epochs",
        "",
        "Frozen accuracy on the validation split; mean ± sample std over seeds; the paired "
        "difference to fixed in points.",
        "",
        format_seed_table(seed_summary(results)),
        "",
        "| variant | train acc (last epoch, soft) | best val acc (soft) |",
        "| --- | ---: | ---: |",
    ]
    for variant, items in runs.items():
        train = [h[-1]["train_acc"] for _, h, _ in items]
        best = [max(row["val_acc"] for row in h) for _, h, _ in items]
        lines.append(f"| {variant} | {_mean_std(train)} | {_mean_std(best)} |")
    lines += _matters(runs)
    cover = coverage_rows(runs, sites)
    if cover:
        top = max(groups for groups, _ in sites.values())
        lines += [
            "",
            "Group coverage: for every output group of every shuffle, how many of the "
            "previous layer's groups it reads; full: the share that reads all it can, "
            "min(groups, channels / groups), as the fixed shuffle does.",
            "",
            "| variant | " + " | ".join(f"{c}" for c in range(1, top + 1)) + " | mean | full |",
            "| --- |" + " ---: |" * (top + 2),
        ]
        for row in cover:
            counts = " | ".join(str(row["histogram"][c]) for c in range(1, top + 1))
            lines.append(f"| {row['variant']} | {counts} | {row['mean']:.2f} | {row['full']:.0%} |")
    _plot(runs, args.out / "curves.png")
    lines += ["", "![validation accuracy and density per epoch](curves.png)", ""]
    text = "\n".join(lines)
    atomic_write_text(args.out / "experiment.md", text)
    record = {
        "summary": seed_summary(results),
        "coverage": cover,
        "curves": {v: [h for _, h, _ in items] for v, items in runs.items()},
    }
    atomic_write_text(args.out / "experiment.json", strict_json(record))
    return text


def _matters(runs: dict[str, list]) -> list[str]:
    """Fixed minus none in validation accuracy per epoch, paired by seed: when the shuffle
    starts to matter."""
    if "fixed" not in runs or "none" not in runs:
        return []
    fixed = {r.seed: h for r, h, _ in runs["fixed"]}
    none = {r.seed: h for r, h, _ in runs["none"]}
    seeds = sorted(fixed.keys() & none.keys())
    if not seeds:
        return []
    epochs = min(len(fixed[s]) for s in seeds)
    lines = ["", "| epoch | fixed - none, val acc (soft, points) |", "| ---: | ---: |"]
    for e in range(epochs):
        diffs = [100 * (fixed[s][e]["val_acc"] - none[s][e]["val_acc"]) for s in seeds]
        std = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
        lines.append(f"| {e + 1} | {statistics.fmean(diffs):+.2f} ± {std:.2f} |")
    return lines


def _plot(runs: dict[str, list], path: Path) -> None:
    plt = pyplot()
    fig, (acc, dens) = plt.subplots(1, 2, figsize=(11, 4))
    for variant, items in runs.items():
        histories = [h for _, h, _ in items]
        epochs = min(len(h) for h in histories)
        xs = range(1, epochs + 1)

        def mean(field: str, histories=histories, xs=xs) -> list[float]:
            return [statistics.fmean(h[e - 1][field] for h in histories) for e in xs]

        acc.plot(xs, mean("val_acc"), label=variant)
        if histories[0][0].get("density") is not None:
            dens.semilogy(xs, mean("density"), label=variant)
    acc.set(xlabel="epoch", ylabel="validation accuracy (soft, mean over seeds)")
    dens.set(xlabel="epoch", ylabel="non-zero fraction of M")
    for ax in (acc, dens):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _other_budgets(jobs: list[Job], args: argparse.Namespace) -> list[str]:
    """Finished runs of another --epochs in the folder: a table must not mix budgets."""
    found = []
    for job in jobs:
        result = job.run_dir(args.out) / "result.json"
        if result.exists() and json.loads(result.read_text())["epochs"] != args.epochs:
            found.append(str(result.parent))
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = jobs_of(args)
    other = _other_budgets(jobs, args)
    if other:
        print(
            f"{args.out} holds runs of another --epochs than {args.epochs} ({', '.join(other)}): "
            "choose another --out",
            file=sys.stderr,
        )
        return 2
    failed = []
    if not args.report_only:
        # A timeout's SIGTERM unwinds through run_all's finally, which stops the training
        # processes; the previous handler is back afterwards.
        previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            failed = run_all(jobs, args)
        finally:
            signal.signal(signal.SIGTERM, previous)
    print(report(jobs, args))
    if failed:
        print(f"failed runs (logs in {args.out / 'logs'}): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
